"""One run over several processes (``--distributed``): starting JAX's distributed runtime, and
ending every process in one line when another one dies.

Measured with two processes on a localhost coordinator (tests/test_multihost.py; JAX 0.10,
gloo collectives on CPU): when a process dies, the others fail at their next gather with a gloo
error, and JAX's exit handler then waits at a shutdown barrier until the heartbeat timeout
(100 s by default) before aborting with a stack trace; a process whose coordinator (process 0)
is gone is ended from a C++ thread, a fatal log and SIGABRT, with no Python handler run. (The
distributed client's Python callback for a missed heartbeat, which jax.distributed.initialize
does not expose, throws std::bad_cast in jaxlib 0.10.) So:

- ``supervise``: the ``jaxnst`` script runs a ``--distributed`` command in a child process and
  turns the child's death by a signal into one line and exit 1 (the parent never imports JAX);
- ``leave``: after an error, a process of a multi-process run exits at once (``os._exit``),
  without JAX's shutdown barrier;
- ``JAXNST_HEARTBEAT_TIMEOUT`` sets the seconds after which the coordinator declares a silent
  process dead (the tests use 10).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

from jaxnst.errors import ConfigError

HEARTBEAT_ENV = "JAXNST_HEARTBEAT_TIMEOUT"
CHILD_ENV = "JAXNST_DISTRIBUTED_CHILD"  # set in the supervised child: it must not supervise
_FORWARDED = (signal.SIGINT, signal.SIGTERM)
_PEER_LOSS = ("Gloo", "gloo", "Connection closed", "coordination", "heartbeat", "DEADLINE")


def start() -> None:
    """``jax.distributed.initialize()`` before any other use of JAX; ConfigError if it fails.

    JAX finds the coordinator, the process count and this process's id itself on Cloud TPU,
    under SLURM, Open MPI and Kubernetes; elsewhere JAX_COORDINATOR_ADDRESS (host:port of process
    0) with JAX_NUM_PROCESSES and JAX_PROCESS_ID (which this JAX does not read itself) say it.
    """
    import jax

    kwargs = {}
    for name, var in (
        ("num_processes", "JAX_NUM_PROCESSES"),
        ("process_id", "JAX_PROCESS_ID"),
        ("heartbeat_timeout_seconds", HEARTBEAT_ENV),
    ):
        value = os.environ.get(var, "").strip()
        if value:
            if not value.isdigit():
                raise ConfigError(f"--distributed: {var} must be a whole number, not {value!r}")
            kwargs[name] = int(value)
    try:
        jax.distributed.initialize(**kwargs)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"--distributed: jax.distributed.initialize() failed: {err}") from None


def wants_supervisor(argv: list[str]) -> bool:
    """Whether the command line ``argv`` is a ``--distributed`` run this process should
    supervise (not when it is the supervised child already)."""
    return "--distributed" in argv and not os.environ.get(CHILD_ENV)


def supervise(argv: list[str]) -> int:
    """Run ``jaxnst argv`` as a child process and return its exit status; a child stopped by a
    signal (JAX's abort when another process died) is one line on stderr and exit 1. Ctrl-C and
    SIGTERM are passed on to the child, which dies with this process (Linux)."""
    env = {**os.environ, CHILD_ENV: "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "jaxnst", *argv], env=env, preexec_fn=_die_with_parent
    )
    forward = {sig: signal.signal(sig, lambda n, _: child.send_signal(n)) for sig in _FORWARDED}
    try:
        code = child.wait()
    finally:
        for sig, previous in forward.items():
            signal.signal(sig, previous)
    if code >= 0:
        return code
    name = signal.Signals(-code).name
    pid = os.environ.get("JAX_PROCESS_ID", "?")
    print(
        f"jaxnst: error: --distributed: process {pid} stopped by {name}: another process of the "
        "run died or the coordinator became unreachable (JAX's log above says which)",
        file=sys.stderr,
    )
    return 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the supervising parent dies (Linux; elsewhere
    nothing), so that killing the parent never leaves a worker running without it."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def peer_lost(err: BaseException) -> bool:
    """Whether ``err`` says another process of the run is gone (a gloo or coordination error)."""
    return any(s in str(err) for s in _PEER_LOSS)


def leave(code: int, distributed: bool) -> int:
    """``code``; in a multi-process run that failed, exit at once instead: JAX's exit handler
    would wait at its shutdown barrier for every process (up to the heartbeat timeout when one
    has died) and then abort with a stack trace."""
    if distributed and code != 0 and _started():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _started() -> bool:
    try:
        import jax

        return jax.process_count() > 1
    except Exception:  # noqa: BLE001 - no backend: nothing to leave
        return False
