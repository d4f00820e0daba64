"""The routes of ``jaxnst serve`` (jaxnst.routes) through Starlette's TestClient: uploads and
their checks, run requests validated as the CLI validates, events, the live page, downloads, and
no request that reaches outside the server's folder."""

from __future__ import annotations

import io
import json
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from conftest import require
from PIL import Image

from jaxnst import serve, webform

POST = {"X-Jaxnst": "1"}


def png(side: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side * 5 // 6, side, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """(client, app, root): a server with a 20 kB upload limit."""
    try:
        serve.require_web()
    except Exception as err:  # noqa: BLE001
        require("the web extra", str(err))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Starlette 1.x would rather have httpx2; httpx works
        from starlette.testclient import TestClient
    root = tmp_path_factory.mktemp("web")
    app = serve.make_app(root, max_upload_mb=0.02)
    with TestClient(app, base_url="http://127.0.0.1:8765") as client:
        yield client, app, root


def send(client, data: bytes, name: str):
    return client.post("/uploads", content=data, headers={**POST, "X-Filename": name})


@pytest.fixture(scope="module")
def finished(web):
    """A finished 32 px run of 4 iterations with snapshots at 2 and 4: its id."""
    client = web[0]
    content = send(client, png(48, 1), "photo.png").json()["id"]
    style = send(client, png(36, 2), "paint.png").json()["id"]
    body = {"content": content, "styles": [style],
            "options": {"size": 32, "iterations": 4, "save_every": 2}}  # fmt: skip
    answer = client.post("/runs", json=body, headers=POST)
    assert answer.status_code == 201, answer.text
    job = web[1].state.web.queue.jobs[answer.json()["id"]]
    deadline = time.monotonic() + 180
    while job.state not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.state == "done", job.message
    return job


def test_the_page_carries_the_form_and_limits(web):
    page = web[0].get("/")
    assert page.status_code == 200 and "frame-ancestors 'none'" in page.headers[
        "content-security-policy"
    ]  # fmt: skip
    raw = page.text.split('id="jaxnst-config">')[1].split("</script>")[0]
    config = json.loads(raw)
    assert config["options"] == webform.form_fields() and config["maxUploadBytes"] == 20000


def test_uploads_are_checked_and_kept_only_in_the_uploads_folder(web):
    client, _, root = web
    before = {p for p in root.rglob("*")}
    good = send(client, png(40), "..%2F..%2Fescape.png")
    assert good.status_code == 201
    item = good.json()
    assert item["name"] == "escape.png" and (item["width"], item["height"]) == (40, 33)
    assert item["thumb"].startswith("data:image/png;base64,")
    added = {p for p in root.rglob("*")} - before
    assert added == {root / "uploads" / f"{item['id']}.png"}
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
    for data, name, status, message in (
        (b"hello\n", "notes.txt", 415, "notes.txt: not an image (or a format Pillow cannot read)"),
        (b"", "empty.png", 400, "empty.png: empty file, not an image"),
        (png(40)[:300], "cut.png", 415, "cut.png: cannot decode image"),
        (bomb, "bomb.png", 415, "bomb.png: image too large (Image size (400000000 pixels)"),
        (png(200), "big.png", 413, "big.png: 100 kB, more than the 20 kB upload limit"),
    ):
        answer = send(client, data, name)
        assert answer.status_code == status, (name, answer.text)
        assert answer.json()["error"].startswith(message), answer.json()
        assert str(root) not in answer.text and "Traceback" not in answer.text
    assert {p for p in root.rglob("*")} - before == added  # nothing kept of the bad ones


def test_a_run_request_is_validated_as_the_command_line_validates(web):
    client = web[0]
    content = send(client, png(40, 3), "c.png").json()["id"]
    style = send(client, png(40, 4), "s.png").json()["id"]
    cases = [
        ({"styles": [style]}, "choose a content image (drop one on the page)"),
        ({"content": content, "styles": ["0123"]}, "choose one or more style images"),
        ({"content": content, "styles": [style], "options": {"size": "8"}},
         "size must be at least 16 pixels, not 8"),
        ({"content": content, "styles": [style], "options": {"weights": "/etc/passwd"}},
         "option 'weights' cannot be set from the page"),
        ({"content": content, "styles": [style], "options": {"style_blend_weights": "1 2"}},
         "style-blend-weights has 2 values for 1 style images"),
        ({"content": content, "styles": [style], "options": {"size": "x" * 70000}},
         "the request is larger than 65536 bytes"),
    ]  # fmt: skip
    for body, message in cases:
        answer = client.post("/runs", json=body, headers=POST)
        assert answer.status_code == 400 and answer.json()["error"].startswith(message), body
    garbled = client.post("/runs", content=b"{not json", headers=POST)
    assert garbled.json() == {"error": "the request is not JSON"}
    assert not web[1].state.web.queue.jobs or all(
        j.content.id != content for j in web[1].state.web.queue.jobs.values()
    )  # fmt: skip


@pytest.mark.slow
def test_events_tell_the_whole_run_and_resume_where_they_left_off(web, finished):
    client = web[0]
    with client.stream("GET", f"/runs/{finished.id}/events") as stream:
        text = "".join(stream.iter_text())
    events = [block for block in text.split("\n\n") if block.strip()]
    kinds = [b.split("event: ")[1].split("\n")[0] for b in events]
    assert kinds[0] == "status" and kinds.count("frame") == 2 and "rows" in kinds
    last = json.loads(events[-1].split("data: ")[1])
    assert last["state"] == "done" and last["report"].endswith("/files/photo_paint.html")
    # A reconnecting EventSource sends Last-Event-ID: only what came after it.
    with client.stream("GET", f"/runs/{finished.id}/events",
                       headers={"Last-Event-ID": str(len(events) - 2)}) as stream:  # fmt: skip
        rest = [b for b in "".join(stream.iter_text()).split("\n\n") if b.strip()]
    assert rest == events[-1:]
    # All of it seen: 204, which tells an EventSource to stop asking.
    after = client.get(f"/runs/{finished.id}/events", headers={"Last-Event-ID": "9999"})
    assert after.status_code == 204


@pytest.mark.slow
def test_the_view_frames_and_files_of_a_run(web, finished):
    client = web[0]
    view = client.get(f"/runs/{finished.id}/view", follow_redirects=False)
    assert view.status_code == 303 and view.headers["location"].endswith("photo_paint.html")
    report = client.get(view.headers["location"])
    assert report.status_code == 200 and 'id="jaxnst-record"' in report.text
    assert "frame-ancestors 'self'" in report.headers["content-security-policy"]
    result = client.get(f"/runs/{finished.id}/files/photo_paint.png?download=1")
    assert result.headers["content-type"] == "image/png"
    assert result.headers["content-disposition"].startswith("attachment")
    assert result.content == finished.files["photo_paint.png"].read_bytes()
    side = client.get(f"/runs/{finished.id}/files/photo_paint.json").json()
    assert side["inputs"]["content"]["name"] == "photo.png"
    frame = client.get(f"/runs/{finished.id}/frames/0/2")
    assert frame.status_code == 200 and frame.content.startswith(b"\x89PNG")
    # While a run goes, its view is the live page: the report's plus the event script.
    finished.state = "running"
    try:
        live = client.get(f"/runs/{finished.id}/view")
    finally:
        finished.state = "done"
    assert "new EventSource(live.events)" in live.text and "connect-src 'self'" in live.text
    assert f'"events":"/runs/{finished.id}/events"' in live.text


@pytest.mark.slow
def test_no_request_reaches_outside_the_runs_own_files(web, finished):
    client, _, root = web
    (root.parent / "secret.txt").write_text("secret")
    snapshot = "photo_paint_0002.png"  # beside the result, but not a file of the run's list
    assert (finished.dir / snapshot).is_file()
    for path in (
        f"/runs/{finished.id}/files/..%2F..%2F..%2Fsecret.txt",
        f"/runs/{finished.id}/files/%2Fetc%2Fpasswd",
        f"/runs/{finished.id}/files/../../secret.txt",
        f"/runs/{finished.id}/files/{snapshot}",
        f"/runs/{finished.id}/frames/0/3",
        f"/runs/{finished.id}/frames/-1/2",
        f"/runs/{finished.id}/frames/0/..%2F..",
        "/runs/..%2F..%2Fsecret.txt/files/x",
        "/runs/0000/view",
        "/uploads",
        "/static/../secret.txt",
    ):
        answer = client.get(path)
        assert answer.status_code in (404, 405), (path, answer.status_code)
        assert "secret" not in answer.text and "Traceback" not in answer.text
    stop = client.post("/runs/nope/stop", headers=POST)
    assert stop.status_code == 404 and stop.json() == {"error": "no such run"}


@pytest.mark.slow
def test_the_stop_button_stops_a_run_which_keeps_its_files(web, finished):
    client = web[0]
    upload = finished.content.id, finished.styles[0].id
    body = {"content": upload[0], "styles": [upload[1]], "options": {"iterations": 5000,
            "size": 32}}  # fmt: skip
    started = client.post("/runs", json=body, headers=POST).json()
    job = web[1].state.web.queue.jobs[started["id"]]
    deadline = time.monotonic() + 120
    while job.iteration < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    answer = client.post(f"/runs/{job.id}/stop", headers=POST)
    assert answer.status_code == 200 and answer.json()["id"] == job.id
    while job.state != "stopped" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.message.startswith("stopped at iteration ") and job.message.endswith(" of 5000")
    names = [f["name"] for f in job.summary()["files"]]
    assert "photo_paint.png" in names and "photo_paint.html" in names
