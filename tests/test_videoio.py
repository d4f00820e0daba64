"""jaxnst.videoio: round trips through H.264 files, GIFs and frame folders; the frame rate and the
audio track kept; one-line errors naming the file; nothing partial left behind.

Test videos are made here with PyAV, a few frames of 24-48 px. ``fixtures/rotated_90.mp4`` (three
64x32 frames, white left quarter, display rotation 90) was made with FFmpeg 9:
``ffmpeg -display_rotation 90 -i asym.mp4 -c copy rotated_90.mp4``.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxnst import videoio
from jaxnst.errors import ConfigError, ImageError, OutputError
from jaxnst.videoio import output_kind, read_video, write_video

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NTSC = Fraction(30000, 1001)


def frames_of(n: int = 6, h: int = 24, w: int = 32) -> np.ndarray:
    """Smooth, distinct frames: a gradient moving to the right (H.264-friendly)."""
    rows, cols = np.mgrid[0:h, 0:w] / max(h, w)
    out = [
        np.stack([np.sin(cols * 3 + k / 2), rows, np.cos(rows * 2 + cols - k / 3)], -1)
        for k in range(n)
    ]
    return (np.stack(out) * 0.4 + 0.5).astype(np.float32)


def make_video(path: Path, frames: np.ndarray, fps, audio: str | None = None, seconds=1.0):
    """A test video; ``audio``: an audio codec (aac, pcm_s16le, libopus) for a 220 Hz tone."""
    av = pytest.importorskip("av")
    codec = {".webm": "libvpx-vp9"}.get(path.suffix, "libx264")
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=fps)
        video.height, video.width = frames.shape[1:3]
        video.pix_fmt = "yuv420p"
        if audio:
            rate = 48000 if audio == "libopus" else 16000
            sound = out.add_stream(audio, rate=rate, layout="mono")
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray((image * 255).astype(np.uint8), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode())
        if audio:
            t = np.arange(int(rate * seconds)) / rate
            tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[None]
            fmt = "s16" if audio == "pcm_s16le" else "flt"
            data = (tone * 32767).astype(np.int16) if fmt == "s16" else tone
            frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
            frame.sample_rate, frame.pts = rate, 0
            out.mux(sound.encode(frame))
            out.mux(sound.encode())
    return path


def streams(path: Path) -> list[tuple[str, str]]:
    import av

    with av.open(str(path)) as c:
        return [(s.type, s.codec_context.name) for s in c.streams]


def no_leftovers(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------ output kinds


def test_output_kind_follows_the_suffix(tmp_path):
    assert output_kind("a.mp4") == output_kind("b.M4V") == output_kind("c.mov") == "h264"
    assert output_kind("a.gif") == "gif"
    assert output_kind(tmp_path) == output_kind("frames/") == output_kind("frames") == "frames"
    for bad in ("out.png", "out.webm", "out.avi", "notes.txt"):
        with pytest.raises(ConfigError, match=rf"^{bad}: a \.\w+ file cannot hold a video"):
            output_kind(bad)
    (tmp_path / "plain").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        output_kind(tmp_path / "plain")


# ------------------------------------------------------------------ H.264 files


def test_mp4_round_trip_keeps_the_frame_rate(tmp_path):
    av = pytest.importorskip("av")
    frames = frames_of()
    out = write_video(tmp_path / "out.mp4", frames, NTSC)
    back, info = read_video(out)
    assert back.shape == frames.shape and back.dtype == np.float32
    assert info == videoio.VideoInfo(NTSC, False, out)
    assert np.abs(back - frames).mean() < 0.02
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert (s.codec_context.name, s.codec_context.pix_fmt) == ("h264", "yuv420p")
    assert no_leftovers(tmp_path)
    assert read_video(write_video(tmp_path / "b.mov", frames, 12))[1].fps == 12


def test_odd_sides_are_padded_by_a_replicated_row_and_column(tmp_path):
    pytest.importorskip("av")
    frames = frames_of(3, 23, 31)
    back, _ = read_video(write_video(tmp_path / "odd.mp4", frames, 10))
    assert back.shape == (3, 24, 32, 3)
    assert np.abs(back[:, :23, :31] - frames).mean() < 0.02
    assert np.abs(back[:, 23, :31] - frames[:, 22]).mean() < 0.03
    assert np.abs(back[:, :23, 31] - frames[:, :, 30]).mean() < 0.03


def test_audio_is_copied_and_cut_where_the_frames_end(tmp_path):
    av = pytest.importorskip("av")
    source = make_video(tmp_path / "in.mp4", frames_of(10), 10, audio="aac", seconds=1.0)
    frames, info = read_video(source, max_frames=5)
    assert info.audio and info.fps == 10 and len(frames) == 5
    out = write_video(tmp_path / "out.mp4", frames, info.fps, audio_from=info.source)
    assert streams(out) == [("video", "h264"), ("audio", "aac")]
    with av.open(str(out)) as c:
        audio = c.streams.audio[0]
        samples = sum(f.samples for f in c.decode(audio))
    assert 0.4 < samples / audio.sample_rate < 0.62  # 0.5 s of frames, whole AAC packets
    assert read_video(out)[1].audio


def test_audio_an_mp4_cannot_hold_is_reencoded_to_aac(tmp_path):
    pytest.importorskip("av")
    source = make_video(tmp_path / "in.mkv", frames_of(4), 8, audio="pcm_s16le", seconds=0.5)
    assert streams(source)[1] == ("audio", "pcm_s16le")
    out = write_video(tmp_path / "out.mp4", frames_of(4), 8, audio_from=source)
    assert streams(out) == [("video", "h264"), ("audio", "aac")]


def test_webm_with_opus_reads_and_its_audio_is_copied(tmp_path):
    pytest.importorskip("av")
    source = make_video(tmp_path / "in.webm", frames_of(4), 25, audio="libopus", seconds=0.2)
    frames, info = read_video(source)
    assert frames.shape == (4, 24, 32, 3) and info.fps == 25 and info.audio
    out = write_video(tmp_path / "out.mp4", frames, info.fps, audio_from=source)
    assert streams(out) == [("video", "h264"), ("audio", "opus")]


def test_a_rotation_tag_is_applied():
    pytest.importorskip("av")
    frames, _ = read_video(FIXTURES / "rotated_90.mp4")
    assert frames.shape == (3, 64, 32, 3)  # upright as players show it: the left edge at the bottom
    assert frames[:, -12:].mean() > 0.95 and frames[:, :40].mean() < 0.05


def test_long_side_and_max_frames(tmp_path):
    pytest.importorskip("av")
    source = make_video(tmp_path / "in.mp4", frames_of(6, 24, 32), 10)
    frames, _ = read_video(source, long_side=16, max_frames=4)
    assert frames.shape == (4, 12, 16, 3)


# ------------------------------------------------------------------ GIFs and frame folders


def test_gif_round_trip_needs_no_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    frames = frames_of()
    out = write_video(tmp_path / "out.gif", frames, 25)
    back, info = read_video(out)
    assert back.shape == frames.shape and info.fps == 25 and not info.audio
    assert np.abs(back - frames).mean() < 0.02  # a 256-colour palette per frame
    assert read_video(write_video(tmp_path / "fast.gif", frames, 60))[1].fps == 50  # 20 ms
    with pytest.raises(ConfigError, match=r"pip install 'jaxnst\[video\]'"):
        write_video(tmp_path / "out.mp4", frames, 25)
    assert not (tmp_path / "out.mp4").exists() and no_leftovers(tmp_path)


def test_folder_round_trip_is_exact_and_replaces_a_longer_clip(tmp_path):
    frames = frames_of(12)
    folder = write_video(tmp_path / "frames", frames, 25)
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"frame_{i:05d}.png" for i in range(1, 13)]
    back, info = read_video(folder, fps=NTSC)
    assert np.array_equal(np.round(back * 255), np.round(np.clip(frames, 0, 1) * 255))
    assert info == videoio.VideoInfo(NTSC, False, folder)
    (folder / "notes.txt").write_text("mine")
    write_video(folder, frames[:3], 25)
    assert sorted(p.name for p in folder.iterdir()) == [
        "frame_00001.png", "frame_00002.png", "frame_00003.png", "notes.txt",
    ]  # fmt: skip
    assert no_leftovers(tmp_path)


def test_frames_are_sorted_naturally_and_globs_work(tmp_path):
    frames = frames_of(11)
    for i, f in enumerate(frames, start=1):  # frame_1 ... frame_11: not zero-padded
        Image.fromarray((f * 255).astype(np.uint8)).save(tmp_path / f"frame_{i}.png")
    (tmp_path / "other_1.png").write_bytes((tmp_path / "frame_1.png").read_bytes())
    back, _ = read_video(tmp_path / "frame_*.png")
    assert len(back) == 11
    np.testing.assert_allclose(back, frames, atol=1 / 255)
    assert len(read_video(tmp_path)[0]) == 12  # the whole folder, other_1.png included


# ------------------------------------------------------------------ bad input, one line each


def test_unreadable_inputs_are_one_line_errors(tmp_path):
    pytest.importorskip("av")
    cases = {
        tmp_path / "missing.mp4": "no such file or folder",
        tmp_path / "empty.mp4": "empty file, not a video",
        tmp_path / "text.mp4": "not a video",
        tmp_path / "text.gif": "not a GIF",
        tmp_path / "nothing" / "*.png": "matches no files",
    }
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video at all\n" * 50)
    (tmp_path / "text.gif").write_text("GIF? no\n")
    good = make_video(tmp_path / "good.mp4", frames_of(8, 48, 64), 10)
    (tmp_path / "cut.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases[tmp_path / "cut.mp4"] = "not a video|cannot decode"
    one = make_video(tmp_path / "one.mp4", frames_of(1), 10)
    cases[one] = r"1 frame\(s\); a video needs at least 2"
    sound = tmp_path / "sound.m4a"
    import av

    with av.open(str(sound), "w") as out:
        s = out.add_stream("aac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 4096), np.float32), "flt", "mono")
        frame.sample_rate, frame.pts = 16000, 0
        out.mux(s.encode(frame))
        out.mux(s.encode())
    cases[sound] = "has no video track"
    for path, message in cases.items():
        with pytest.raises(ImageError, match=message) as err:
            read_video(path)
        text = str(err.value)
        assert "\n" not in text and text.startswith(str(path)), text


def test_symbolic_link_loops_and_dangling_links_are_named(tmp_path):
    """Issue 13, defect 7: a looping input was called "no such file or folder"."""
    (tmp_path / "a.mp4").symlink_to(tmp_path / "b.mp4")
    (tmp_path / "b.mp4").symlink_to(tmp_path / "a.mp4")
    (tmp_path / "d.mp4").symlink_to(tmp_path / "gone.mp4")
    with pytest.raises(ImageError, match="a.mp4: symbolic link loop"):
        read_video(tmp_path / "a.mp4")
    with pytest.raises(ImageError, match="d.mp4: broken symbolic link"):
        read_video(tmp_path / "d.mp4")


def test_a_full_disk_in_a_frame_folder_names_the_frame(tmp_path, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(OutputError, match=r"frame_00001.png: cannot write \(No space left"):
        write_video(tmp_path / "frames", frames_of(3), 25)
    assert list(tmp_path.iterdir()) == []


def test_folders_with_mixed_sizes_or_no_images_are_refused(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("RGB", (32, 24)).save(folder / "frame_1.png")
    Image.new("RGB", (32, 24)).save(folder / "frame_2.png")
    Image.new("RGB", (30, 24)).save(folder / "frame_3.png")
    with pytest.raises(ImageError, match=r"frame_3\.png: 30x24, but frame_1\.png is 32x24"):
        read_video(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="no image files"):
        read_video(tmp_path / "empty")
    with pytest.raises(ImageError, match="1 frame"):
        read_video(folder / "frame_[1].png")  # a pattern matching one file


def test_bad_outputs_fail_before_writing_anything(tmp_path):
    frames = frames_of(3)
    with pytest.raises(ImageError, match="does not exist"):
        write_video(tmp_path / "no" / "out.gif", frames, 25)
    with pytest.raises(ImageError, match="does not exist"):
        write_video(tmp_path / "no" / "frames", frames, 25)
    with pytest.raises(ImageError, match=r"array \(n, h, w, 3\)"):
        write_video(tmp_path / "out.gif", frames[0], 25)
    with pytest.raises(ConfigError, match="frame rate must be positive"):
        write_video(tmp_path / "out.gif", frames, 0)
    with pytest.raises(ConfigError, match="cannot hold a video"):
        write_video(tmp_path / "out.png", frames, 25)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    pytest.importorskip("av")
    out = write_video(tmp_path / "out.mp4", frames_of(3), 10)
    before = out.read_bytes()

    def broken(tmp, *args):
        tmp.write_bytes(b"half a video")
        raise ImageError("cannot write the video (disk full)")

    monkeypatch.setattr(videoio, "_write_h264", broken)
    with pytest.raises(ImageError, match="disk full"):
        write_video(out, frames_of(5), 10)
    assert out.read_bytes() == before and no_leftovers(tmp_path)
