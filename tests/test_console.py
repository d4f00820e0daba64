"""The command line's console: the progress bar and lines, the stop flag, the snapshot cadence."""

from __future__ import annotations

import io

import numpy as np

from jaxnst import console
from jaxnst.config import StyleConfig


def test_progress_bar_on_a_terminal_shows_rate_and_losses():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = console.Progress(StyleConfig(iterations=10), total=10, quiet=False, stream=stream)
    assert progress.mode == "bar"
    progress.start(0)
    row = {"iteration": 5, "evaluations": 6, "total": 2.0, "content": 1.0, "style": 1e-3, "tv": 0}
    progress.update(5, row, variants=1)
    progress.close()
    text = stream.getvalue()
    assert "5/10" in text and "it/s" in text and "total 2.000e+00" in text
    quiet = console.Progress(StyleConfig(), total=10, quiet=True, stream=stream)
    assert quiet.mode == "quiet"


def test_stop_flag_turns_the_first_ctrl_c_into_a_request(monkeypatch):
    import signal

    flag = console.StopFlag()
    before = signal.getsignal(signal.SIGINT)
    flag.install()
    assert signal.getsignal(signal.SIGINT) == flag._handle
    flag._handle(signal.SIGINT, None)
    assert flag.requested
    try:
        flag._handle(signal.SIGINT, None)  # a second Ctrl-C quits at once
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the second Ctrl-C did not raise")
    flag.uninstall()
    assert signal.getsignal(signal.SIGINT) == before


def test_calls_land_on_the_next_snapshot_and_progress_line():
    class Run:  # what the cadence reads of a StyleRun
        n, rows, calls_made = 1, [[]], 0

        def __init__(self, it):
            self.it = it

        def fresh(self):
            return False

    class Scales:
        total = 100

        def __init__(self, it):
            self.it = it

        def iterations(self, run):
            return np.asarray([run.it])

    cfg = StyleConfig(save_every=10, print_every=25, chunk=50)
    hooks = console.Console(cfg, Scales(0), quiet=True)
    hooks.next_save, hooks.step_s = 10, 1e-4  # fast steps: a whole chunk would fit
    assert hooks.calls(Run(3)) == 7  # stops at the snapshot at iteration 10
    hooks.progress.mode, hooks.progress.next_print = "lines", 25
    hooks.next_save = 30
    assert hooks.calls(Run(21)) == 4  # and at the progress line at 25
    hooks.step_s = None
    assert hooks.calls(Run(21)) == 1  # the first call times a step
