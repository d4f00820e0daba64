"""Files on disk: why a path cannot be opened, whole-or-absent writes, sets of files that appear
together (issue 13, defects 5 and 7)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jaxnst.errors import ImageError, OutputError
from jaxnst.files import TEMP_NAME_EXTRA, all_or_nothing, atomic_write, missing_file, name_max


def test_missing_file_tells_loops_dangling_links_and_folders_from_missing_files(tmp_path):
    """Defect 7: Path.exists calls a symbolic link loop "no such file"."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    assert missing_file(tmp_path / "file") is None
    assert missing_file(tmp_path / "missing") == "no such file"
    assert "symbolic link loop" in missing_file(tmp_path / "a")
    assert missing_file(tmp_path / "dangling").startswith("broken symbolic link (to ")
    assert missing_file(tmp_path) == "is a directory, expected a file"
    assert "File name too long" in missing_file(tmp_path / ("x" * 300))


def _write(text: str):
    return lambda tmp: tmp.write_text(text)


def test_atomic_write_names_the_file_it_cannot_write(tmp_path):
    def full(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match=r"out.png: cannot write \(No space left on device\)"):
        atomic_write(tmp_path / "out.png", full)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ImageError, match="does not exist"):
        atomic_write(tmp_path / "no" / "out.png", _write("x"))
    assert atomic_write(tmp_path / "ok.txt", _write("x")).read_text() == "x"


def test_a_set_of_files_appears_together_or_not_at_all(tmp_path):
    """Defect 5: a full disk halfway through a run's files left the new image beside the old
    sidecar; now the old set stays as it was and no temporary file is left."""
    (tmp_path / "a.txt").write_text("old a")
    (tmp_path / "b.txt").write_text("old b")
    with all_or_nothing():
        atomic_write(tmp_path / "a.txt", _write("new a"))
        assert (tmp_path / "a.txt").read_text() == "old a"  # renamed only at the end
        with all_or_nothing():  # an inner block joins the outer one
            atomic_write(tmp_path / "b.txt", _write("new b"))
        assert (tmp_path / "b.txt").read_text() == "old b"
    assert [(tmp_path / n).read_text() for n in ("a.txt", "b.txt")] == ["new a", "new b"]

    def full(tmp: Path) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="c.txt: cannot write"), all_or_nothing():
        atomic_write(tmp_path / "a.txt", _write("newer a"))
        atomic_write(tmp_path / "c.txt", full)
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt"]
    assert (tmp_path / "a.txt").read_text() == "new a"


def test_name_max_is_the_file_systems():
    assert name_max("/") >= 14 + TEMP_NAME_EXTRA
    assert name_max("/no/such/directory") == 255
