"""Video in and out: files, animated GIFs and frame folders <-> float32 (n, h, w, 3) RGB in [0, 1].

Inputs: a video file FFmpeg reads (mp4, mov, mkv, webm, avi, ...; through PyAV, upright per its
rotation tag), an animated GIF (through Pillow), a folder of image files, or a glob pattern of
them; frame files are sorted naturally (frame_2 before frame_10). Outputs, by suffix:

- ``.mp4`` / ``.m4v`` / ``.mov``: H.264 (libx264, yuv420p, CRF 18) at the given frame rate, with
  the audio track of ``audio_from`` copied (re-encoded to AAC if the container cannot hold it);
- ``.gif``: an animated GIF, looping (Pillow; no extra needed);
- no suffix, or an existing folder: a folder of PNG frames ``frame_00001.png`` ...

Every output is written to a temporary file or folder beside the target, then renamed into place:
an interrupted or failed write leaves nothing partial. Video files need the ``video`` extra
(PyAV); GIFs and frame folders need only Pillow.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from jaxnst.errors import ConfigError, ImageError, OutputError
from jaxnst.files import missing_file
from jaxnst.image import as_image, atomic_write, fit_size, read_image, resize, to_uint8

H264_SUFFIXES = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# Audio codecs an MP4/MOV file takes as they are; anything else is re-encoded to AAC.
COPY_AUDIO = {"aac", "mp3", "alac", "flac", "opus", "ac3", "eac3"}
DEFAULT_FPS = Fraction(25)  # for frame folders, which carry no rate
GIF_DEFAULT_FPS = Fraction(10)  # a GIF without delays plays at about 10 fps in browsers


@dataclass(frozen=True)
class VideoInfo:
    """What ``read_video`` learned besides the pixels."""

    fps: Fraction  # frames per second (a folder: the fps argument)
    audio: bool  # the source has an audio track (``write_video(audio_from=info.source)``)
    source: Path  # the file, folder or glob pattern the frames came from


def _av():
    try:
        import av
    except ImportError:
        raise ConfigError("video files need PyAV: pip install 'jaxnst[video]'") from None
    return av


def natural_key(path: Path | str) -> list:
    """Sort key that orders embedded numbers by value: frame_2 before frame_10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]


def output_kind(path: str | Path) -> str:
    """What ``write_video`` will write at ``path``: "h264", "gif" or "frames" (a PNG folder).

    Call it before a long run: a path that cannot hold a video is a ``ConfigError`` here.
    """
    p = Path(path)
    if p.is_dir() or str(path).endswith(("/", os.sep)) or not p.suffix:
        if p.exists() and not p.is_dir():
            raise ConfigError(f"{p}: exists and is not a folder, cannot hold frames")
        return "frames"
    suffix = p.suffix.lower()
    if suffix in H264_SUFFIXES:
        return "h264"
    if suffix == ".gif":
        return "gif"
    raise ConfigError(
        f"{p}: a {suffix} file cannot hold a video; use .mp4, .mov, .gif or a folder (PNG frames)"
    )


# ------------------------------------------------------------------ reading


def _prepare(image, name: str, long_side: int | None) -> np.ndarray:
    arr = as_image(image, name)
    return resize(arr, fit_size(arr.shape[:2], long_side)) if long_side else arr


def _frame_files(source: str | Path) -> tuple[list[Path], Path]:
    """The image files of a folder or glob pattern, sorted naturally."""
    path = Path(source)
    if path.is_dir():
        files = [
            p
            for p in path.iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
        ]
        if not files:
            raise ImageError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    else:
        files = [Path(p) for p in glob.glob(str(source)) if Path(p).is_file()]
        if not files:
            raise ImageError(f"{source}: matches no files")
    return sorted(files, key=natural_key), path


def _read_folder(source, long_side, max_frames) -> tuple[list[np.ndarray], Path]:
    files, path = _frame_files(source)
    frames, first = [], None
    for file in files[:max_frames]:
        image = read_image(file)
        if first is None:
            first = (file, image.shape)
        elif image.shape != first[1]:
            (h, w), (h0, w0) = image.shape[:2], first[1][:2]
            raise ImageError(
                f"{file}: {w}x{h}, but {first[0].name} is {w0}x{h0}; "
                "the frames of a video must share one size"
            )
        frames.append(_prepare(image, str(file), long_side))
    return frames, path


def _read_gif(path: Path, long_side, max_frames) -> tuple[list[np.ndarray], Fraction]:
    frames, delays = [], []
    try:
        with Image.open(path) as img:
            for k, frame in enumerate(ImageSequence.Iterator(img)):
                if max_frames and k >= max_frames:
                    break
                delays.append(frame.info.get("duration", 0) or 0)
                frames.append(_prepare(frame.convert("RGBA"), f"{path}[{k}]", long_side))
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a GIF (or one Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{path}: cannot decode GIF ({err}); truncated or corrupted?") from None
    total = sum(delays)
    fps = Fraction(1000 * len(delays), total).limit_denominator(1000) if total else GIF_DEFAULT_FPS
    return frames, fps


def _read_file(path: Path, long_side, max_frames) -> tuple[list[np.ndarray], Fraction, bool]:
    av = _av()
    try:
        container = av.open(str(path))
    except av.FFmpegError:
        raise ImageError(f"{path}: not a video (or a format FFmpeg cannot read)") from None
    frames = []
    with container:
        if not container.streams.video:
            raise ImageError(f"{path}: has no video track")
        stream = container.streams.video[0]
        fps = stream.average_rate or stream.guessed_rate or DEFAULT_FPS
        try:
            for frame in container.decode(stream):
                image = frame.to_ndarray(format="rgb24")
                turn = getattr(frame, "rotation", 0) or 0  # display matrix, counterclockwise
                if turn % 90 == 0 and turn:
                    image = np.ascontiguousarray(np.rot90(image, turn // 90))
                frames.append(_prepare(image, f"{path}[{len(frames)}]", long_side))
                if max_frames and len(frames) >= max_frames:
                    break
        except av.FFmpegError as err:
            raise ImageError(
                f"{path}: cannot decode frame {len(frames)} ({err}); truncated or corrupted?"
            ) from None
        audio = bool(container.streams.audio)
    return frames, Fraction(fps), audio


def read_video(
    source: str | Path,
    long_side: int | None = None,
    max_frames: int | None = None,
    fps: float | Fraction = DEFAULT_FPS,
    min_frames: int = 2,
) -> tuple[np.ndarray, VideoInfo]:
    """Decode a video file, an animated GIF, a folder of frames or a glob pattern of frames.

    Returns float32 (n, h, w, 3) RGB in [0, 1] and a ``VideoInfo``. ``long_side`` resizes every
    frame so that its longer side has that many pixels (Lanczos, as stills); ``max_frames`` stops
    early; ``fps`` is the rate of a folder or pattern (video files and GIFs carry their own).
    Fewer than ``min_frames`` frames, frames of different sizes in a folder, and anything
    unreadable are one-line ``ImageError``s naming the file.
    """
    path = Path(source)
    audio = False
    problem = missing_file(path)  # a symlink loop is not "no such file"
    if path.is_dir() or (problem == "no such file" and re.search(r"[*?[]", str(source))):
        frames, path = _read_folder(source, long_side, max_frames)
        rate = Fraction(fps)
    elif problem is not None:
        raise ImageError(f"{path}: {problem.replace('no such file', 'no such file or folder')}")
    elif path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file, not a video")
    elif path.suffix.lower() == ".gif":
        frames, rate = _read_gif(path, long_side, max_frames)
    else:
        frames, rate, audio = _read_file(path, long_side, max_frames)
    if not frames:
        raise ImageError(f"{path}: no frames")
    if len(frames) < min_frames:
        raise ImageError(
            f"{path}: {len(frames)} frame(s); a video needs at least {min_frames} "
            "(stylise a single image with `jaxnst stylize`)"
        )
    return np.stack(frames), VideoInfo(rate, audio, path)


# ------------------------------------------------------------------ writing


def _frames_uint8(frames) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] < 1 or min(arr.shape[1:3]) < 1:
        raise ImageError(f"frames must be an array (n, h, w, 3), not shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)):
        raise ImageError("frames must be uint8 or finite floats in [0, 1]")
    return to_uint8(arr)


def _rate(fps) -> Fraction:
    try:
        rate = Fraction(fps).limit_denominator(1_000_000)
    except (TypeError, ValueError):
        raise ConfigError(f"frame rate must be a number, not {fps!r}") from None
    if rate <= 0:
        raise ConfigError(f"frame rate must be positive, not {fps}")
    return rate


def _even(image: np.ndarray) -> np.ndarray:
    """Pad the bottom row / right column by replication to even sides, as yuv420p needs."""
    h, w = image.shape[:2]
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _write_h264(tmp: Path, fmt: str, frames: np.ndarray, rate: Fraction, audio_from, crf: int):
    av = _av()
    n, h, w = frames.shape[:3]
    with av.open(str(tmp), "w", format=fmt) as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height = w + w % 2, h + h % 2
        video.pix_fmt = "yuv420p"
        video.options = {"crf": str(crf)}
        source = None
        if audio_from is not None:
            try:
                source = av.open(str(audio_from))
            except av.FFmpegError:
                raise ImageError(f"{audio_from}: cannot read its audio (not a video?)") from None
        try:
            audio_in = source.streams.audio[0] if source and source.streams.audio else None
            copy = audio_in is not None and audio_in.codec_context.name in COPY_AUDIO
            if copy:
                audio_out = out.add_stream_from_template(audio_in)
            elif audio_in is not None:
                mono = audio_in.codec_context.layout.nb_channels == 1
                audio_out = out.add_stream(
                    "aac",
                    rate=audio_in.codec_context.sample_rate,
                    layout="mono" if mono else "stereo",
                )
            for i, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(_even(image), format="rgb24")
                frame.pts = i
                out.mux(video.encode(frame))
            out.mux(video.encode())
            if audio_in is None:
                return
            end = n / rate  # the audio is cut where the frames end
            if copy:
                for packet in source.demux(audio_in):
                    if packet.dts is None or packet.pts is None:
                        continue  # the demuxer's final empty packet
                    if packet.pts * packet.time_base >= end:
                        break
                    packet.stream = audio_out
                    out.mux(packet)
            else:
                for frame in source.decode(audio_in):
                    if frame.time is not None and frame.time >= end:
                        break
                    frame.pts = None  # the encoder counts samples itself
                    out.mux(audio_out.encode(frame))
                out.mux(audio_out.encode())
        except av.FFmpegError as err:
            raise ImageError(f"cannot write the video ({err})") from None
        finally:
            if source is not None:
                source.close()


def _write_gif(tmp: Path, frames: np.ndarray, rate: Fraction) -> None:
    # GIF delays are whole centiseconds; browsers slow delays under 20 ms down to 100 ms.
    delay = max(20, round(100 / rate) * 10)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(
        tmp, format="GIF", save_all=True, append_images=images[1:], duration=delay, loop=0
    )


def _write_folder(path: Path, frames: np.ndarray) -> None:
    parent = path.parent
    if not parent.is_dir():
        raise ImageError(f"{path}: directory {parent} does not exist")
    try:
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as err:
        raise ImageError(f"{path}: cannot write in {parent} ({err.strerror})") from None
    digits = max(5, len(str(len(frames))))
    names = [f"frame_{i:0{digits}d}.png" for i in range(1, len(frames) + 1)]
    try:
        for name, frame in zip(names, frames, strict=True):
            try:
                Image.fromarray(frame).save(tmp / name, format="PNG")
            except OSError as err:  # a full disk: the folder as it was, the frame named
                raise OutputError(f"{path / name}: cannot write ({err.strerror or err})") from None
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700
        if not path.exists():
            os.replace(tmp, path)
            return
        for name in names:  # an existing folder: each frame replaced atomically
            os.replace(tmp / name, path / name)
        for stale in path.glob("frame_*.png"):  # a previous, longer clip's tail
            if stale.name not in names and re.fullmatch(r"frame_\d+\.png", stale.name):
                stale.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_video(
    path: str | Path,
    frames,
    fps: float | Fraction,
    audio_from: str | Path | None = None,
    crf: int = 18,
) -> Path:
    """Write frames (n, h, w, 3), uint8 or float in [0, 1], as ``output_kind(path)`` says.

    H.264 files play at ``fps`` exactly (a Fraction such as 30000/1001 is kept), odd sides are
    padded by one replicated row/column (yuv420p needs even sides), ``crf`` sets the quality
    (0 lossless .. 51; 18 looks transparent). ``audio_from``: a video file whose first audio
    track is copied (cut where the frames end). GIF delays are rounded to 10 ms (at least 20 ms).
    A folder gets ``frame_00001.png`` ...; an existing one has its frames replaced and a longer
    previous clip's extra frames removed. Returns the path.
    """
    path = Path(path)
    kind = output_kind(path)
    u8 = _frames_uint8(frames)
    rate = _rate(fps)
    if kind == "frames":
        _write_folder(path, u8)
    elif kind == "gif":
        atomic_write(path, lambda tmp: _write_gif(tmp, u8, rate))
    else:
        _av()  # a missing extra is reported before any temporary file exists
        fmt = H264_SUFFIXES[path.suffix.lower()]
        atomic_write(path, lambda tmp: _write_h264(tmp, fmt, u8, rate, audio_from, crf))
    return path
