"""``jaxnst serve``: the guard (Host, token, same-origin POSTs), the command, and the page driven
in headless Chromium: upload two images, a 32 px run with live updates, download the result and
compare its bytes with the same run through the API; bad uploads get one message on the page."""

from __future__ import annotations

import io
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, require
from PIL import Image

from jaxnst import cli, serve
from jaxnst.image import save_image

RUN = {"size": 32, "iterations": 10, "save_every": 2}  # the browser's run, as the form sets it


def web_missing() -> str | None:
    try:
        serve.require_web()
    except Exception as err:  # noqa: BLE001 - the message says what is missing
        return str(err)
    return None


@pytest.fixture(scope="module")
def client_for():
    """client_for(app) -> a Starlette TestClient (httpx) for ``app``."""
    require("the web extra", web_missing())
    with warnings.catch_warnings():  # Starlette 1.x would rather have httpx2; httpx works
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    return lambda app, **kw: TestClient(app, base_url="http://127.0.0.1:8765", **kw)


def picture(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.uniform(20, 235, (4, 5, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), np.float32)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def bomb_png(side: int = 20000) -> bytes:
    """A PNG whose header claims side x side pixels: Pillow refuses it before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))


def noise_png(side: int) -> bytes:
    rng = np.random.default_rng(0)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


# ---------------------------------------------------------------------- the guard
def test_on_loopback_only_requests_naming_this_server_are_answered(client_for, tmp_path):
    hosts = frozenset({"127.0.0.1:8765", "localhost:8765"})
    with client_for(serve.make_app(tmp_path, hosts=hosts)) as client:
        page = client.get("/")
        assert page.status_code == 200 and "jaxnst-config" in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-content-type-options"] == "nosniff"
        # DNS rebinding: a page of another site that resolves to 127.0.0.1 names its own host.
        rebound = client.get("/", headers={"Host": "evil.example:8765"})
        assert rebound.status_code == 421 and "127.0.0.1:8765" in rebound.text
        assert client.get("/", headers={"Host": "localhost:8765"}).status_code == 200


def test_posts_need_the_pages_header_and_origin(client_for, tmp_path):
    with client_for(serve.make_app(tmp_path)) as client:
        # A cross-site form can post, but cannot add a header: refused before anything is read.
        bare = client.post("/uploads", content=noise_png(8))
        assert bare.status_code == 403 and "X-Jaxnst" in bare.text
        evil = {"X-Jaxnst": "1", "Origin": "http://evil.example"}
        assert client.post("/uploads", content=noise_png(8), headers=evil).status_code == 403
        same = {"X-Jaxnst": "1", "Origin": "http://127.0.0.1:8765", "X-Filename": "n.png"}
        assert client.post("/uploads", content=noise_png(8), headers=same).status_code == 201
    assert len(list((tmp_path / "uploads").iterdir())) == 1  # the refused ones left nothing


def test_off_loopback_every_request_needs_the_token(client_for, tmp_path):
    app = serve.make_app(tmp_path, token="s3cret-token")
    with client_for(app, follow_redirects=False) as client:
        for path in ("/", "/events", "/runs/0/view", "/runs/0/files/x.png"):
            refused = client.get(path)
            assert refused.status_code == 403 and "?token=" in refused.text, path
        assert client.get("/?token=wrong").status_code == 403
        assert client.get("/?token=%C3%A9t%C3%A9").status_code == 403  # not ASCII: still 403
        post = client.post("/uploads", content=noise_png(8), headers={"X-Jaxnst": "1"})
        assert post.status_code == 403
        # The token in the address: a cookie (HttpOnly, SameSite=Strict), and the address
        # without it; then the cookie alone opens everything.
        opened = client.get("/?token=s3cret-token")
        assert opened.status_code == 303 and opened.headers["location"] == "/"
        cookie = opened.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert client.get("/").status_code == 200
    with client_for(app) as other:
        bearer = {"Authorization": "Bearer s3cret-token"}
        assert other.get("/", headers=bearer).status_code == 200


def test_a_bug_in_a_route_is_one_line_of_json(client_for, tmp_path, monkeypatch, capsys):
    from jaxnst import webform

    def broken():
        raise RuntimeError("something broke\nwith a second line")

    monkeypatch.setattr(webform, "form_fields", broken)
    with client_for(serve.make_app(tmp_path), raise_server_exceptions=False) as client:
        answer = client.get("/")
    assert answer.status_code == 500
    assert answer.json() == {
        "error": "internal error (RuntimeError: something broke with a second line); "
        "see the server's log"
    }
    assert "Traceback" not in answer.text and "Traceback" in capsys.readouterr().err


# ---------------------------------------------------------------------- the command
def test_serve_without_the_web_extra_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "starlette", None)  # import starlette -> ImportError
    assert cli.main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "jaxnst: error: jaxnst serve needs the web extra (starlette is missing): "
        "pip install 'jaxnst[web]'"
    )


def test_serve_on_a_port_it_cannot_have_is_one_line(client_for, capsys):
    taken = serve.listen("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        for bad in (str(port), "70000"):
            assert cli.main(["serve", "--port", bad, "--no-compile-cache"]) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"jaxnst: error: cannot listen on 127.0.0.1:{bad} (")
            assert err.count("\n") == 1
    finally:
        taken.close()


def test_serve_on_another_address_prints_a_token_and_removes_its_files_at_exit(client_for):
    """The real command: start-up lines, the token, an upload, Ctrl-C, the folder gone."""
    import urllib.error
    import urllib.request

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxnst", "serve", "--host", "0.0.0.0", "--port", "0",
         "--no-compile-cache"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    try:
        url = proc.stdout.readline().split("open ", 1)[1].strip()
        folder = Path(proc.stdout.readline().split(" in ", 1)[1].split(" (removed")[0])
        assert "?token=" in url and folder.is_dir()
        base, token = url.split("?token=")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base, timeout=10)
        assert refused.value.code == 403
        request = urllib.request.Request(
            base + "uploads", data=noise_png(16), method="POST",
            headers={"X-Jaxnst": "1", "X-Filename": "a.png", "Authorization": f"Bearer {token}"},
        )  # fmt: skip
        assert urllib.request.urlopen(request, timeout=30).status == 201
        assert len(list((folder / "uploads").iterdir())) == 1
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    assert code == 0, proc.stderr.read()
    assert not folder.exists()


# ---------------------------------------------------------------------- in a browser
@pytest.fixture(scope="module")
def server(client_for, tmp_path_factory):
    """A real server (uvicorn in a thread) on a free loopback port, uploads up to 1 MB."""
    sock = serve.listen("127.0.0.1", 0)
    app = serve.make_app(
        tmp_path_factory.mktemp("serve"), hosts=serve.loopback_hosts(sock), max_upload_mb=1.0
    )
    server = serve.make_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/", app
    server.should_exit = True
    thread.join(15)


@pytest.fixture
def open_page(browser, server):
    """open_page() -> (page, problems): the served page, ready; problems = page errors."""
    contexts = []

    def open_():
        context = browser.new_context(viewport={"width": 1400, "height": 950})
        contexts.append(context)
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda err: problems.append(f"error: {err}"))
        page.goto(server[0])
        page.wait_for_selector("html[data-ready=true]", state="attached")
        return page, problems

    yield open_
    for context in contexts:
        context.close()


def test_upload_run_watch_live_and_download_the_same_bytes_as_the_api(open_page, server, tmp_path):
    import jaxnst

    save_image(tmp_path / "tubingen.png", picture(40, 48, 1))
    save_image(tmp_path / "starry.png", picture(36, 36, 2))
    # The same run through the API first (it also compiles: the served run then starts at once).
    reference = jaxnst.stylize(tmp_path / "tubingen.png", tmp_path / "starry.png", **RUN)
    save_image(tmp_path / "api.png", reference.image)

    page, problems = open_page()
    page.set_input_files("#content-file", str(tmp_path / "tubingen.png"))
    page.set_input_files("#style-file", str(tmp_path / "starry.png"))
    page.wait_for_selector("#content-thumbs .thumb")
    page.wait_for_selector("#style-thumbs .thumb")
    assert "48 × 40" in page.locator("#content-thumbs").inner_text()
    for name, value in RUN.items():
        page.fill(f"#opt-{name}", str(value))
    page.click("#start")
    page.wait_for_selector('.job[data-state="done"]', timeout=120_000)

    updates = page.evaluate("window.jaxnstServe.updates")
    frames = [u for u in updates if u["kind"] == "frame"]
    rows = [u for u in updates if u["kind"] == "rows"]
    # Live: the frames came one by one as the run went (2, 4, ... 10), each shown as it came.
    its = [u["iteration"] for u in frames]  # snapshots (and a preview when a step is slow)
    assert {2, 4, 6, 8, 10} <= set(its) and its == sorted(its)
    assert len({u["at"] for u in frames}) >= 2 and len({u["src"] for u in frames}) == len(its)
    assert rows and rows[-1]["iteration"] == 10
    # The finished run's page is its report: the result at the end of its trackbar.
    viewer = page.frame_locator("#viewer")
    viewer.locator("html[data-ready=true]").wait_for(state="attached")
    assert viewer.locator("#iteration-label").inner_text() == "iteration 10 / 10"

    job = page.locator(".job").first
    with page.expect_download() as download:
        job.locator('a[data-file="tubingen_starry.png"]').click()
    got = Path(download.value.path()).read_bytes()
    assert got == (tmp_path / "api.png").read_bytes()
    names = job.locator(".files a").all_inner_texts()
    assert {"tubingen_starry.json", "tubingen_starry.html"} <= set(names)
    assert problems == []


def test_bad_uploads_show_one_readable_message_each(open_page, tmp_path):
    (tmp_path / "notes.txt").write_text("not a picture\n")
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    (tmp_path / "big.png").write_bytes(noise_png(700))  # 1.5 MB, over this server's 1 MB
    cases = [
        ("#content-file", "notes.txt", "notes.txt: not an image (or a format Pillow cannot read)"),
        ("#content-file", "bomb.png", "bomb.png: image too large (Image size (400000000 pixels)"),
        ("#style-file", "big.png", "big.png: 1.5 MB, more than the 1.0 MB upload limit"),
    ]
    for selector, name, message in cases:
        page, problems = open_page()
        page.set_input_files(selector, str(tmp_path / name))
        shown = page.locator(".message.error:visible")
        shown.first.wait_for()
        assert shown.count() == 1, shown.all_inner_texts()
        assert shown.inner_text().startswith(message)
        assert page.locator(".thumb").count() == 0 and problems == []
    # Starting without images says what is missing, on the page.
    page.click("#start")
    assert page.locator("#form-message").inner_text() == "Drop a content image first."
