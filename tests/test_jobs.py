"""Runs of ``jaxnst serve`` (jaxnst.jobs): the queue, live events, stop and cancel, the files
each run writes (the CLI's), and a second run of a size that compiles nothing."""

from __future__ import annotations

import asyncio
import json
import shlex
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxnst import cli, jobs, outputs
from jaxnst.config import StyleConfig
from jaxnst.jobs import JobQueue, Upload


def upload(folder: Path, name: str, seed: int, hw=(40, 48)) -> Upload:
    rng = np.random.default_rng(seed)
    path = folder / f"{seed}.png"
    Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(path)
    return Upload(f"id{seed}", name, path, outputs.file_sha256(path), hw[1], hw[0])


def wait_for(condition, seconds: float = 180.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def run_async(make) -> object:
    """asyncio.run(make()) in a thread of its own (Playwright's sync API, once a browser test
    ran, keeps an event loop running in this one)."""
    out = {}
    thread = threading.Thread(target=lambda: out.update(value=asyncio.run(make())))
    thread.start()
    thread.join()
    return out["value"]


@pytest.fixture
def queue(tmp_path):
    q = JobQueue(tmp_path / "runs")
    yield q
    q.close()


def test_the_event_log_wakes_async_readers_from_another_thread():
    log = jobs.EventLog()

    async def read():
        seen = log.version
        t0 = time.perf_counter()
        threading.Timer(0.05, lambda: log.append("rows", {"n": 1})).start()
        version = await log.wait(seen, timeout=10.0)
        return version, time.perf_counter() - t0

    version, waited = run_async(read)
    assert version == 1 and waited < 5.0
    assert log.since(0) == [(0, "rows", {"n": 1})] and log.since(1) == []
    assert run_async(lambda: log.wait(version, timeout=0.01)) == version  # nothing new
    log.close()
    assert log.closed and log.version == 2


def test_the_command_line_of_a_run_reproduces_its_config():
    cfg = StyleConfig(size=64, style_weight=1e4, original_colors=True, scales=(32, 64),
                      style_layers=("conv1_1", "conv2_1"), init="content")  # fmt: skip
    line = jobs.command_line(cfg, "my photo.jpg", ["starry.jpg"], "out.png")
    assert line.startswith("jaxnst stylize 'my photo.jpg' starry.jpg -o out.png --size 64")
    args = cli.build_parser().parse_args(shlex.split(line)[1:])
    assert cli.make_config(args, StyleConfig()) == cfg
    assert jobs.safe_name("../../étoile nuit?") == "toile_nuit" and jobs.safe_name("..") == "image"


@pytest.mark.slow
def test_runs_go_one_at_a_time_and_the_second_of_a_size_compiles_nothing(queue, tmp_path):
    content, style = upload(tmp_path, "photo.png", 1), upload(tmp_path, "paint.jpg", 2)
    first = queue.submit(content, [style], StyleConfig(size=32, iterations=6, save_every=3))
    second = queue.submit(content, [style], StyleConfig(size=32, iterations=4, seed=1))
    wait_for(lambda: first.state in ("running", "done"))
    assert second.state == "queued"  # one at a time
    wait_for(lambda: second.state == "done")
    assert first.state == "done" and second.compile_s < 0.5 * first.compile_s + 0.1
    assert second.message.startswith("done in") and first.iteration == 6

    kinds = [(kind, data.get("state")) for _, kind, data in first.events.since(0)]
    states = [state for kind, state in kinds if kind == "status"]
    assert states == ["queued", "preparing", "compiling", "running", "writing", "done"][1:]
    assert ("frame", None) in kinds and ("rows", None) in kinds
    frames = [d for _, kind, d in first.events.since(0) if kind == "frame"]
    assert [(f["variant"], f["iteration"]) for f in frames] == [(0, 3), (0, 6)]
    assert frames[0]["url"] == f"/runs/{first.id}/frames/0/3"
    rows = [d["rows"] for _, kind, d in first.events.since(0) if kind == "rows"]
    assert sum((r["iteration"] for r in rows), []) == list(range(7))  # every row, once
    assert {"total", "content", "style", "style/conv1_1"} <= set(rows[0])
    done = first.events.since(0)[-1][2]
    assert done["report"] == f"/runs/{first.id}/files/photo_paint.html" and first.events.closed

    # The CLI's files, in the run's own folder, with the user's names in the sidecar.
    assert set(first.files) >= {"photo_paint.png", "photo_paint.json", "photo_paint.html",
                                "photo_paint_history.csv"}  # fmt: skip
    assert all(p.parent == first.dir for p in first.files.values())
    side = json.loads(first.files["photo_paint.json"].read_text())
    assert side["inputs"]["content"]["name"] == "photo.png" and side["stopped"] == ""
    assert side["command"].startswith("jaxnst stylize photo.png paint.jpg -o photo_paint.png")
    assert [s["iteration"] for s in side["snapshots"]] == [3, 6]
    assert not (first.dir / "photo_paint.ckpt.npz").exists()  # served runs are not resumed
    assert "/runs/" not in json.dumps(first.summary()["files"]).replace(f"/runs/{first.id}/", "")


@pytest.mark.slow
def test_stop_ends_a_run_with_its_files_and_cancels_a_waiting_one(tmp_path):
    queue = JobQueue(tmp_path / "runs", limit=2)
    try:
        content, style = upload(tmp_path, "a.png", 3), upload(tmp_path, "b.png", 4)
        long = queue.submit(content, [style], StyleConfig(size=32, iterations=500))
        waiting = queue.submit(content, [style], StyleConfig(size=32, iterations=5))
        with pytest.raises(jobs.JaxnstError, match=r"the queue is full \(2 runs\)"):
            queue.submit(content, [style], StyleConfig(size=32))
        queue.stop(waiting)
        assert waiting.state == "cancelled" and waiting.events.closed
        wait_for(lambda: long.iteration >= 2)
        queue.stop(long)
        wait_for(lambda: long.state == "stopped")
        assert long.message == f"stopped at iteration {long.iteration} of 500"
        assert long.iteration < 500 and "a_b.png" in long.files and "a_b.html" in long.files
        side = json.loads(long.files["a_b.json"].read_text())
        assert side["stopped"] == long.message and side["iterations"] == long.iteration
        time.sleep(0.2)
        assert waiting.state == "cancelled" and not waiting.files  # it never ran
    finally:
        queue.close()


def test_a_failing_run_says_why_in_one_line_with_the_users_names(queue, tmp_path):
    content, style = upload(tmp_path, "holiday.png", 5), upload(tmp_path, "art.png", 6)
    style.path.unlink()  # gone before the run reads it
    job = queue.submit(content, [style], StyleConfig(size=32, iterations=2))
    wait_for(lambda: job.state == "failed", 60)
    assert job.message == "art.png: no such file"
    assert job.events.since(0)[-1][2]["state"] == "failed" and job.events.closed


@pytest.mark.slow
def test_closing_the_queue_stops_the_run_and_writes_nothing(tmp_path):
    queue = JobQueue(tmp_path / "runs")
    content, style = upload(tmp_path, "a.png", 7), upload(tmp_path, "b.png", 8)
    job = queue.submit(content, [style], StyleConfig(size=32, iterations=500, save_every=1))
    wait_for(lambda: job.iteration >= 2)
    queue.close(timeout=60)
    assert not queue._thread.is_alive()
    assert (job.state, job.message) == ("stopped", "the server stopped") and not job.files
    assert not list(job.dir.glob("a_b.*"))  # no result, sidecar or report: the folder goes next
