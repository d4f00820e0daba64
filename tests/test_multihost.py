"""--distributed for real: two processes on localhost, each with two forced CPU devices; and the
supervisor that turns a process killed by another's death into one line.

JAX runs several CPU processes on one machine through ``jax.distributed.initialize`` with a
coordinator on 127.0.0.1 (the CLI passes JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
JAX_PROCESS_ID) and gloo for the CPU collectives (JAX 0.10's default). The run is the real path:
5 variants padded to 8 over the 4 devices of 2 processes, every variant its one-image program on
its device, results gathered to process 0, which alone writes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxnst import cli, multihost
from jaxnst.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--size", "32", "--iterations", "8", "--variants", "5", "--no-plot",
        "--content-layers", "conv2_1", "--style-layers", "conv1_1", "conv2_1"]  # fmt: skip
linux = pytest.mark.skipif(sys.platform != "linux", reason="forks a localhost cluster")


# ------------------------------------------------------------------ the module on its own
def test_start_passes_the_environment_and_refuses_a_malformed_one(monkeypatch):
    import jax

    seen = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: seen.append(kw))
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    monkeypatch.setenv(multihost.HEARTBEAT_ENV, "10")
    multihost.start()
    assert seen == [{"num_processes": 2, "process_id": 1, "heartbeat_timeout_seconds": 10}]
    monkeypatch.setenv(multihost.HEARTBEAT_ENV, "soon")
    with pytest.raises(ConfigError, match="JAXNST_HEARTBEAT_TIMEOUT must be a whole number"):
        multihost.start()


@linux
def test_the_supervisor_reports_a_child_killed_by_a_signal(tmp_path, monkeypatch, capsys):
    """JAX ends a process whose peer died with SIGABRT from C++ (a fatal log, a stack trace):
    the parent says so in one line and exits 1; other exit codes pass through."""
    script = tmp_path / "child"
    script.write_text("#!/bin/sh\nkill -ABRT $$\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(script))
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert multihost.wants_supervisor(["a.png", "b.png", "--distributed"])
    assert multihost.supervise(["a.png", "b.png", "--distributed"]) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith("jaxnst: error: --distributed: process 1 stopped by SIGABRT")
    script.write_text("#!/bin/sh\nexit 3\n")
    assert multihost.supervise(["--distributed"]) == 3
    monkeypatch.setenv(multihost.CHILD_ENV, "1")  # the child itself does not supervise again
    assert not multihost.wants_supervisor(["--distributed"])
    assert multihost.peer_lost(RuntimeError("Gloo AllGather failed: Connection closed by peer"))


# ------------------------------------------------------------------ two processes
def _inputs(tmp: Path) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for name, (h, w) in {"content.png": (24, 32), "style.png": (32, 32)}.items():
        small = rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)
        Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR).save(tmp / name)
        paths.append(str(tmp / name))
    return paths


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tmp: Path, inputs: list[str], extra: list[str]) -> list[subprocess.Popen]:
    """Both processes of a 2-process run, each in its own directory and process group."""
    port = _free_port()
    procs = []
    for i in range(2):
        work = tmp / f"p{i}"
        work.mkdir()
        env = dict(
            os.environ,
            JAX_PLATFORMS="cpu",
            XLA_FLAGS="--xla_force_host_platform_device_count=2",
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(i),
            JAXNST_HEARTBEAT_TIMEOUT="10",
            JAXNST_CACHE_DIR=str(tmp / "cache"),
            PYTHONPATH=str(ROOT),
        )
        cmd = [sys.executable, "-m", "jaxnst", *inputs, "-o", "out.png", "--distributed", *extra]
        with open(work / "stderr", "wb") as err:
            procs.append(subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL,
                                          stderr=err, start_new_session=True))  # fmt: skip
    return procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@linux
def test_two_processes_give_the_one_process_bytes_and_only_process_0_writes(tmp_path, capsys):
    inputs = _inputs(tmp_path)
    procs = _start(tmp_path, inputs, ARGS)
    try:
        codes = [p.wait(timeout=400) for p in procs]
    finally:
        _stop(procs)
    err = [(tmp_path / f"p{i}" / "stderr").read_text(errors="replace")[-1500:] for i in (0, 1)]
    assert codes == [0, 0], err
    assert os.listdir(tmp_path / "p1") == ["stderr"]  # process 1 computed, wrote nothing
    names = {f"out_v{k}.{e}" for k in range(5) for e in ("png", "json")} | {"out_history.csv"}
    assert set(os.listdir(tmp_path / "p0")) == names | {"stderr"}

    one = tmp_path / "one"  # the same run in this process: one CPU device, no distribution
    one.mkdir()
    assert cli.main([*inputs, "-o", str(one / "out.png"), *ARGS, "-q", "--no-compile-cache"]) == 0
    capsys.readouterr()
    for k in range(5):
        a = np.asarray(Image.open(tmp_path / "p0" / f"out_v{k}.png"))
        b = np.asarray(Image.open(one / f"out_v{k}.png"))
        np.testing.assert_array_equal(a, b, err_msg=f"variant {k}")
        sa, sb = (json.loads((d / f"out_v{k}.json").read_text()) for d in (tmp_path / "p0", one))
        assert sa["image_sha256"] == sb["image_sha256"] and sa["final_loss"] == sb["final_loss"]
        assert sa["device"]["count"] == 4 and sb["device"]["count"] == 1
    history = (tmp_path / "p0" / "out_history.csv").read_text()
    assert history == (one / "out_history.csv").read_text()


@linux
@pytest.mark.parametrize("victim", [1, 0])
def test_a_dead_process_stops_the_other_in_one_line(tmp_path, victim):
    """Process ``victim`` is killed mid-run; the survivor exits 1 within seconds with one
    'jaxnst: error: --distributed: ...' line, instead of hanging until the heartbeat timeout or
    aborting with a stack trace (process 0 is also the coordinator)."""
    inputs = _inputs(tmp_path)
    extra = ["--size", "32", "--iterations", "100000", "--variants", "3", "--print-every", "1",
             "--content-layers", "conv2_1", "--style-layers", "conv1_1", "conv2_1"]  # fmt: skip
    procs = _start(tmp_path, inputs, [*extra, "--no-plot", "--history", "none"])
    survivor = procs[1 - victim]
    try:
        log = tmp_path / "p0" / "stderr"
        deadline = time.monotonic() + 300
        while "iteration " not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), (
                log.read_text(errors="replace")[-1500:]
            )
            time.sleep(0.5)
        os.killpg(procs[victim].pid, signal.SIGKILL)
        t0 = time.monotonic()
        code = survivor.wait(timeout=120)
        seconds = time.monotonic() - t0
    finally:
        _stop(procs)
    text = (tmp_path / f"p{1 - victim}" / "stderr").read_text(errors="replace")
    last = text.strip().splitlines()[-1]
    assert code == 1, text[-2000:]
    assert last.startswith("jaxnst: error: --distributed:"), last
    assert seconds < 30
