"""Files on disk, safely: why a path cannot be opened, and writes that are whole or absent.

``missing_file`` tells a missing file from a looping or dangling symbolic link, a directory and a
name the file system refuses (``Path.exists`` calls all of them "no such file"). ``atomic_write``
writes through a temporary file in the same directory and renames it into place, so a failed or
interrupted write leaves no partial file; inside ``all_or_nothing()`` the renames wait for the
end of the block, so the files of one run (images, history, plot, sidecars) appear together or
not at all, and a full disk leaves the previous run's set as it was. A write that fails is an
``OutputError`` naming the file.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from jaxnst.errors import ImageError, OutputError


def missing_file(path: str | Path) -> str | None:
    """Why ``path`` cannot be opened as a file, in a few words; None if it can be tried."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            if path.is_symlink():
                return f"broken symbolic link (to {os.readlink(path)}, which does not exist)"
        return "no such file"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "symbolic link loop (too many levels of symbolic links)"
        return f"cannot be opened ({err.strerror or err})"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, expected a file"
    return None


# The temporary files of the writes inside all_or_nothing(), with their final paths.
_STAGED: contextvars.ContextVar[list[tuple[Path, Path]] | None] = contextvars.ContextVar(
    "jaxnst_staged_writes", default=None
)
TEMP_NAME_EXTRA = len(".") + len(".XXXXXXXX.tmp")  # the temporary name is .{name}.XXXXXXXX.tmp


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    Inside ``all_or_nothing()`` the rename waits for the end of the block. ImageError if the
    directory does not exist; OutputError (naming ``path``) if the file cannot be written.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ImageError(f"{path}: directory {parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise OutputError(f"{path}: cannot write in {parent} ({err.strerror or err})") from None
    os.close(fd)
    staged = _STAGED.get()
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        if staged is None:
            os.replace(tmp, path)
        else:
            staged.append((Path(tmp), path))
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({err.strerror or err})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def all_or_nothing() -> Iterator[None]:
    """Files written by ``atomic_write`` in this block appear together at its end, or none do.

    Each is written to its temporary file first (where a full disk fails); only when all are
    written are they renamed into place (a rename needs no space). On any failure every
    temporary file is removed and older files of the same names stay as they were, so a sidecar
    never describes another run's image. Blocks nest: an inner one joins the outer.
    """
    if _STAGED.get() is not None:
        yield
        return
    staged: list[tuple[Path, Path]] = []
    token = _STAGED.set(staged)
    try:
        yield
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        _STAGED.reset(token)
    for i, (tmp, path) in enumerate(staged):
        try:
            os.replace(tmp, path)
        except OSError as err:
            for rest, _ in staged[i:]:
                rest.unlink(missing_ok=True)
            raise OutputError(f"{path}: cannot write ({err.strerror or err})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def name_max(directory: str | Path) -> int:
    """The longest file name ``directory``'s file system takes, in bytes (255 if unknown)."""
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255
