"""Screenshots of the run report and of ``jaxnst serve`` for the README (docs/images/).

python scripts/page_screenshots.py [--size 128] [--iterations 100] [--out docs/images]

Runs the command line on a content and a style image with ``--save-every``, opens its
``out.html`` from disk in headless Chromium (Debian's ``chromium`` through Playwright, as the
tests do) with the trackbar moved back to a middle snapshot, and screenshots it; then starts
``jaxnst serve`` in this process, uploads the same pair through its page, starts a run with the
same options and screenshots the page while the run goes. Needs the test extra and chromium.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from jaxnst import cli, serve  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
SHARED = ROOT.parent / "shared" / "images"


def save_jpeg(png: bytes, path: Path) -> None:
    Image.open(io.BytesIO(png)).convert("RGB").save(path, "JPEG", quality=85, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1000} kB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--content", default=str(SHARED / "tubingen.jpg"))
    parser.add_argument("--style", default=str(SHARED / "starry_night.jpg"))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--save-every", type=int, default=5)
    parser.add_argument("--init", default="content", help="as for stylize (the paper: noise)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    out, work = Path(args.out).resolve(), Path(tempfile.mkdtemp(prefix="jaxnst-shots-"))
    content, style = (Path(shutil.copy(p, work)) for p in (args.content, args.style))
    options = {"size": args.size, "iterations": args.iterations, "save_every": args.save_every,
               "init": args.init}  # fmt: skip
    flags = [token for k, v in options.items() for token in (f"--{k.replace('_', '-')}", str(v))]
    result = work / f"{content.stem}_{style.stem}.png"
    os.chdir(work)  # the report's command line then reads as a user would type it
    if cli.main([content.name, style.name, "-o", result.name, *flags]) != 0:
        return 1
    sock = serve.listen("127.0.0.1", 0)
    app = serve.make_app(work / "serve", hosts=serve.loopback_hosts(sock))
    server = serve.make_server(app)
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(result.with_suffix(".html").as_uri())
        page.wait_for_selector("html[data-ready=true]", state="attached")
        page.evaluate("window.jaxnstReport.setPosition(Math.floor(window.jaxnstReport.state"
                      ".steps.length * 0.4))")  # fmt: skip
        save_jpeg(page.screenshot(), out / "report_page.jpg")

        while not server.started:
            time.sleep(0.05)
        page.goto(f"http://127.0.0.1:{sock.getsockname()[1]}/")
        page.wait_for_selector("html[data-ready=true]", state="attached")
        page.set_input_files("#content-file", str(content))
        page.set_input_files("#style-file", str(style))
        page.wait_for_selector("#style-thumbs .thumb")
        for name, value in options.items():
            if name == "init":
                page.select_option(f"#opt-{name}", value)
            else:
                page.fill(f"#opt-{name}", str(value))
        page.click("#start")
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:  # the run half done: frames so far, curves so far
            jobs = app.state.web.queue.jobs.values()
            if any(j.iteration >= args.iterations // 2 or j.state == "done" for j in jobs):
                break
            time.sleep(0.2)
        time.sleep(1.0)
        save_jpeg(page.screenshot(), out / "serve_page.jpg")
        browser.close()
    server.should_exit = True
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
