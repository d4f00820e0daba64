"""The run report (jaxnst.report): its HTML, sizes, escaping, and the page in headless Chromium.

Unit tests read the HTML text. Browser tests open the file:// report in Debian's ``chromium``
driven by Playwright (``pip install playwright``; no browser download: ``executable_path``
points at the distribution's binary). They skip, saying what is missing, when Playwright or
Chromium is not there, and fail instead with ``JAXNST_REQUIRE_BROWSER=1`` (CI sets it).
"""

from __future__ import annotations

import base64
import html.parser
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxnst import report
from jaxnst.errors import ConfigError
from jaxnst.image import save_image

EVIL = "</script><script>window.pwned = 1</script><!--"


# ---------------------------------------------------------------------- synthetic runs
def picture(side: int, t: float, seed: int) -> np.ndarray:
    """A smooth picture plus noise that fades as t goes 0 -> 1, like a run from noise."""
    rng = np.random.default_rng(seed)
    h, w = side * 3 // 4, side
    small = rng.uniform(30, 225, (6, 8, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), np.float32)
    noise = rng.normal(0, 60 * (1 - t) + 4, (h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def history(iterations: int, seed: int) -> dict[str, np.ndarray]:
    it = np.arange(iterations + 1)
    decay = 1 + 50 * np.exp(-it / (iterations / 8)) + 0.01 * seed
    hist = {"iteration": it, "evaluations": it + 1, "total": 1e6 * decay}
    hist["content"] = 1e4 * (1 - np.exp(-it / 10)) + 1.0
    hist["style"] = hist["total"] - hist["content"]
    for k, layer in enumerate(("conv1_1", "conv2_1", "conv3_1")):
        hist[f"style/{layer}"] = hist["style"] / (3 + k)
    hist["tv"] = 1e3 * decay
    return hist


def make_record(
    tmp_path: Path, variants: int = 2, iterations: int = 40, every: int = 10, side: int = 64
) -> dict:
    """A run's record with snapshot files (as the CLI writes them) and array inputs."""
    out = []
    for k in range(variants):
        snaps = []
        for it in range(every, iterations + 1, every):
            path = tmp_path / f"out_v{k}_{it:04d}.png"
            save_image(path, picture(side, it / iterations, seed=k))
            snaps.append((it, path))
        out.append(
            {
                "label": f"out_v{k}.png",
                "params": {"seed": k, "style_weight": 10.0 ** (3 + k)},
                "image": snaps[-1][1],
                "iteration": iterations,
                "snapshots": snaps,
                "history": history(iterations, k),
                "sidecar": {"seed": k, "iterations": iterations, "image_sha256": "ab" * 32,
                            "config": {"size": side, "init": "noise"}},
            }
        )  # fmt: skip
    return {
        "title": "out.png",
        "subtitle": "jaxnst stylize c.png s.png -o out.png",
        "content": picture(side, 1.0, seed=10),
        "styles": [picture(side, 1.0, seed=11)],
        "y_label": "weighted loss",
        "variants": out,
    }


def snapshot_bytes(record: dict) -> int:
    return sum(Path(p).stat().st_size for v in record["variants"] for _, p in v["snapshots"])


class Parts(html.parser.HTMLParser):
    """The <script> elements of a page: (attributes, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[tuple[dict, str]] = []
        self._open: dict | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self._open = dict(attrs)
            self.scripts.append((self._open, ""))

    def handle_data(self, data):
        if self._open is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag):
        if tag == "script":
            self._open = None


def page_parts(text: str) -> tuple[dict, list[str], str]:
    """(the page's record, its image data: URIs, the code) of a report's HTML."""
    parts = Parts()
    parts.feed(text)
    by_id = {a.get("id"): t for a, t in parts.scripts if a.get("id")}
    images = [by_id[f"jaxnst-image-{i}"] for i in range(len(by_id) - 1)]
    code = [t for a, t in parts.scripts if not a]
    assert len(code) == 1
    return json.loads(by_id["jaxnst-record"]), images, code[0]


# ---------------------------------------------------------------------- unit tests
def test_encoding_rule_png_for_flat_jpeg_for_noisy_files_as_they_are(tmp_path):
    flat = np.zeros((64, 64, 3), np.uint8)
    flat[:, 32:] = 200
    assert report.encode_array(flat)[0] == "image/png"
    assert report.encode_array(picture(64, 1.0, seed=0))[0] == "image/jpeg"  # photo-like
    # White noise: JPEG saves nothing, so it stays lossless.
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert report.encode_array(noisy)[0] == "image/png"
    # A snapshot file is embedded byte for byte, however noisy: never re-encoded bigger.
    save_image(tmp_path / "snap.png", noisy)
    mime, data = report.encode_image(tmp_path / "snap.png")
    assert mime == "image/png" and data == (tmp_path / "snap.png").read_bytes()
    # A format browsers do not show is re-encoded from its pixels.
    Image.fromarray(flat).save(tmp_path / "snap.tiff")
    assert report.encode_image(tmp_path / "snap.tiff")[0] == "image/png"
    # Inputs larger than the results are shrunk first.
    mime, data = report.encode_image(tmp_path / "snap.png", max_side=16)
    assert max(Image.open(io.BytesIO(data)).size) == 16


def test_the_page_holds_record_images_and_code_and_stores_equal_images_once(tmp_path):
    record = make_record(tmp_path, variants=2, iterations=40, every=10)
    text = report.build_report(record)
    page, images, code = page_parts(text)
    assert "jaxnstReport" in code and '<canvas id="plot"' in text
    assert [v["label"] for v in page["variants"]] == ["out_v0.png", "out_v1.png"]
    v0 = page["variants"][0]
    assert [it for it, _ in v0["snapshots"]] == [10, 20, 30, 40]
    assert v0["image"] == v0["snapshots"][-1][1]  # the result is the last snapshot: once
    assert v0["params"] == {"seed": 0, "style_weight": 1000.0}
    assert v0["history"]["iteration"][:3] == [0, 1, 2]
    assert set(v0["history"]) >= {"total", "content", "style", "style/conv1_1", "tv"}
    # 2 variants x 4 snapshots + content + style, each a data: URI of the file's own bytes.
    assert len(images) == 2 * 4 + 2
    first = record["variants"][0]["snapshots"][0][1].read_bytes()
    assert images[v0["snapshots"][0][1]] == "data:image/png;base64," + base64.b64encode(
        first
    ).decode("ascii")
    assert page["content"] is not None and len(page["styles"]) == 1


def test_a_500_iteration_report_weighs_less_than_twice_its_snapshots(tmp_path):
    record = make_record(tmp_path, variants=2, iterations=500, every=25, side=128)
    path = report.write_report(tmp_path / "out.html", record)
    snaps = snapshot_bytes(record)
    size = path.stat().st_size
    assert size < 2 * snaps, (size, snaps)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_no_network_references(tmp_path):
    record = make_record(tmp_path, variants=1, iterations=20, every=10, side=32)
    record["variants"][0]["sidecar"]["config"]["note"] = "see https://example.org/x.png"
    text = report.build_report(record)
    page, images, code = page_parts(text)
    assert all(uri.startswith("data:image/") for uri in images)
    # Apart from the record (inert text, shown with textContent), no URL anywhere.
    outside = text.replace(json.dumps(page), "")
    outside = re.sub(r'<script type="application/json".*?</script>', "", text, flags=re.S)
    assert not re.search(r"(https?:|ftp:)?//[a-z0-9.-]+\.[a-z]{2,}", outside, re.I), "a URL"
    assert not re.search(r"\b(src|href|action|poster)\s*=\s*[\"']?(https?:)?//", text, re.I)
    assert not re.search(r"url\(|@import|fetch\(|XMLHttpRequest|WebSocket|EventSource", text)
    assert "default-src 'none'" in text  # and the browser is told to fetch nothing
    assert "https://example.org/x.png" in page["variants"][0]["sidecar"]["config"]["note"]


def test_config_strings_cannot_break_the_page(tmp_path):
    record = make_record(tmp_path, variants=1, iterations=20, every=10, side=32)
    record["title"] = "<b>bold</b> & " + EVIL
    record["variants"][0]["label"] = EVIL
    record["variants"][0]["sidecar"]["config"]["output_template"] = EVIL
    record["variants"][0]["sidecar"]["loss"] = float("nan")
    text = report.build_report(record)
    scripts = len(re.findall(r"<script\b", text))
    assert text.count("</script>") == scripts  # each value's '</script>' stayed inside JSON
    assert "<b>bold</b>" not in text and "&lt;b&gt;bold&lt;/b&gt;" in text  # <title>
    page, _, _ = page_parts(text)
    assert page["variants"][0]["label"] == EVIL and page["title"].startswith("<b>bold</b> & ")
    assert page["variants"][0]["sidecar"]["loss"] == "nan"  # JSON has no NaN


def test_history_values_are_rounded_and_nonfinite_are_gaps(tmp_path):
    record = make_record(tmp_path, variants=1, iterations=20, every=10, side=32)
    hist = record["variants"][0]["history"]
    hist["total"] = hist["total"].astype(np.float64)
    hist["total"][3] = np.nan
    hist["total"][4] = np.inf
    hist["total"][5] = 1 / 3
    page, _, _ = page_parts(report.build_report(record))
    total = page["variants"][0]["history"]["total"]
    assert total[3] is None and total[4] is None and total[5] == 0.333333


def test_a_live_page_gets_its_policy_and_script_and_values_never_become_markers(tmp_path):
    record = make_record(tmp_path, variants=1, iterations=20, every=10, side=32)
    record["title"] = "@@SCRIPT@@ @@RECORD@@ @@CSP@@"
    record["live"] = {"events": "/runs/ab12/events"}
    text = report.build_report(record, csp="default-src 'self'", script="window.live = 1;")
    assert '<meta http-equiv="Content-Security-Policy" content="default-src \'self\'">' in text
    parts = Parts()
    parts.feed(text)
    code = [body for attrs, body in parts.scripts if not attrs]
    assert len(code) == 2 and code[1].strip() == "window.live = 1;"  # after the page's own
    record_json = next(body for attrs, body in parts.scripts if attrs.get("id") == "jaxnst-record")
    page = json.loads(record_json)
    assert page["live"] == {"events": "/runs/ab12/events"} and page["title"] == record["title"]
    assert text.count("@@SCRIPT@@") == 2  # the <title> and the record: text, not markers
    # A report has no script of its own beyond the page's, and its strict policy.
    plain = report.build_report(make_record(tmp_path, variants=1, side=32))
    assert "window.live" not in plain and f'content="{report.REPORT_CSP}"' in plain
    with pytest.raises(ValueError, match="must not close"):
        report.build_report(record, script="x = '</SCRIPT>'")


def video_record(frames: int = 3, side: int = 32) -> dict:
    sidecar = {
        "command": "jaxnst video in.mp4 s.png -o v.mp4",
        "config": {"iterations": 10, "passes": 2, "style_weight": 10.0},
        "passes": [
            {"pass": 1, "seconds": 1.0, "loss": {"total": 50.0, "style": 4.0}},
            {"pass": 2, "seconds": 1.0, "loss": {"total": 20.0, "style": 1.5}},
        ],
    }
    clip = np.stack([picture(side, t / frames, 7 + t) for t in range(frames)])
    content = picture(side, 1.0, 99) / 255.0
    return report.record_from_video(sidecar, clip, 12.0, content, [], "v.mp4")


def test_a_video_report_has_its_frames_and_the_loss_per_pass(monkeypatch):
    page, images, _ = page_parts(report.build_report(video_record()))
    assert len(page["video"]["frames"]) == 3 and page["video"]["fps"] == 12.0
    (v,) = page["variants"]
    assert v["image"] is None and v["snapshots"] == [] and v["sidecar"]["passes"][1]["pass"] == 2
    # Mean losses after each pass, against the iterations done (10 over 2 passes), weighted.
    assert v["history"]["iteration"] == [5, 10] and v["history"]["style"] == [40.0, 15.0]
    assert page["subtitle"] == "jaxnst video in.mp4 s.png -o v.mp4" and len(images) == 4
    monkeypatch.setattr(report, "MAX_FRAMES", 3)
    many = page_parts(report.build_report(video_record(frames=7)))[0]
    assert len(many["video"]["frames"]) == 3 and many["notes"] == ["3 of the 7 frames shown."]


def test_a_record_without_variants_is_refused():
    with pytest.raises(ConfigError, match="no variants"):
        report.build_report({"variants": []})


def test_record_from_result_of_a_sweep_weights_each_variants_curves():
    from jaxnst.config import StyleConfig
    from jaxnst.stylize import Result

    hists = [history(10, k) for k in range(2)]
    images = np.stack([picture(32, 1.0, k) for k in range(2)])
    result = Result(images=images, history=hists, iterations=np.array([10, 10]),
                    evaluations=np.array([11, 12]), final_loss=[{"total": 1.0}] * 2,
                    config=StyleConfig(style_weight=1.0, style_layers=("conv1_1", "conv2_1")),
                    seeds=[0, 0])  # fmt: skip
    snaps = [(5, images // 2), (10, images)]
    record = report.record_from_result(result, snapshots=snaps, sweep={"style_weight": [10, 1e3]})
    v0, v1 = record["variants"]
    assert v0["params"] == {"seed": 0, "style_weight": 10} and v1["params"]["style_weight"] == 1e3
    np.testing.assert_allclose(v1["history"]["style"], 1e3 * hists[1]["style"])
    np.testing.assert_allclose(v0["history"]["style/conv2_1"], 5 * hists[0]["style/conv2_1"])
    assert [it for it, _ in v1["snapshots"]] == [5, 10] and v1["sidecar"]["evaluations"] == 12
    page, images_, _ = page_parts(report.build_report(record))
    assert page["variants"][1]["image"] == page["variants"][1]["snapshots"][-1][1]
    assert len(images_) == 4  # 2 variants x (snapshot at 5, result = snapshot at 10)


# ---------------------------------------------------------------------- in a browser
@pytest.fixture
def open_report(browser):
    """open_report(path) -> (page, problems): page ready, problems = errors and requests."""
    contexts = []

    def open_(path: Path, width: int = 1400):
        context = browser.new_context(viewport={"width": width, "height": 900})
        contexts.append(context)
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda err: problems.append(f"error: {err}"))
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        url = path.resolve().as_uri()
        page.on("request", lambda r: problems.append(r.url) if r.url != url else None)
        page.goto(url)
        # Selector waits: wait_for_function evaluates a string, which the page's CSP forbids.
        page.wait_for_selector("html[data-ready=true]", state="attached", timeout=20000)
        return page, problems

    yield open_
    for context in contexts:
        context.close()


def shown(page) -> dict:
    """What the page shows: main image, its iteration, the label, the plot's marker."""
    return page.evaluate(
        """() => ({
          src: document.getElementById("main-image").getAttribute("src"),
          iteration: Number(document.getElementById("main-image").dataset.iteration),
          label: document.getElementById("iteration-label").textContent,
          marker: Number(document.getElementById("plot").dataset.markerIteration),
          plot: document.getElementById("plot").toDataURL(),
          cells: [...document.querySelectorAll("#grid .cell")].map((c) => c.dataset.iteration),
          slider: Number(document.getElementById("slider").value),
        })"""
    )


def test_the_trackbar_moves_snapshot_and_plot_marker_by_mouse_and_keys(tmp_path, open_report):
    record = make_record(tmp_path, variants=2, iterations=40, every=10, side=64)
    path = report.write_report(tmp_path / "out.html", record)
    page, problems = open_report(path)
    final = shown(page)
    assert final["iteration"] == 40 and final["marker"] == 40 and final["slider"] == 3
    assert final["label"] == "iteration 40 / 40" and final["cells"] == ["40", "40"]

    slider = page.locator("#slider")
    box = slider.bounding_box()
    page.mouse.click(box["x"] + 3, box["y"] + box["height"] / 2)  # the left end: iteration 10
    first = shown(page)
    assert first["iteration"] == first["marker"] == 10 and first["label"] == "iteration 10 / 40"
    assert first["src"] != final["src"] and first["plot"] != final["plot"]
    assert first["cells"] == ["10", "10"]

    page.keyboard.press("ArrowRight")  # the slider has focus after the click: one step
    assert shown(page)["iteration"] == shown(page)["marker"] == 20
    page.locator("h1").click()  # away from the slider, the arrow keys still drive it
    page.keyboard.press("ArrowRight")
    assert shown(page)["marker"] == 30
    page.keyboard.press("Home")
    assert shown(page)["iteration"] == 10
    page.keyboard.press("End")
    assert shown(page)["src"] == final["src"]

    # Dragging the thumb back to the middle lands on a middle snapshot.
    page.mouse.move(box["x"] + box["width"] - 6, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    assert shown(page)["iteration"] in (20, 30)

    # A grid cell selects its variant: the main image and the details follow.
    page.locator('#grid .cell[data-variant="1"]').click()
    assert page.locator("#main-caption").inner_text().startswith("out_v1.png")
    assert page.locator('#grid .cell[data-variant="1"]').get_attribute("aria-pressed") == "true"
    assert "style_weight" in page.locator("#details").inner_text()

    # Play runs through to the result.
    page.keyboard.press("Home")
    page.locator("#play").click()
    page.wait_for_selector('#main-image[data-iteration="40"]', timeout=10000)
    assert problems == []


def test_nothing_is_fetched_and_strings_stay_text(tmp_path, open_report):
    record = make_record(tmp_path, variants=1, iterations=20, every=10, side=32)
    record["title"] = EVIL
    record["variants"][0]["sidecar"]["config"]["output_template"] = EVIL
    record["variants"][0]["sidecar"]["config"]["note"] = "https://example.org/a.png"
    record["video"] = {"frames": [picture(32, t, 5) for t in (0.0, 0.5, 1.0)], "fps": 12}
    page, problems = open_report(report.write_report(tmp_path / "out.html", record))
    assert page.evaluate("window.pwned") is None
    assert page.locator("h1").inner_text() == EVIL
    page.locator("#details summary", has_text="config").click()
    assert EVIL in page.locator("#details").inner_text()
    # The video frames have their own trackbar.
    assert page.locator("#video-label").inner_text() == "frame 1 / 3"
    page.locator("#video-slider").focus()
    page.keyboard.press("ArrowRight")
    assert page.locator("#video-label").inner_text() == "frame 2 / 3"
    assert shown(page)["iteration"] == 20  # the run's trackbar did not move
    assert problems == []  # no request but the file itself, no error


def test_a_live_page_can_add_snapshots_and_rows(tmp_path, open_report):
    record = make_record(tmp_path, variants=1, iterations=20, every=10, side=32)
    record["variants"][0]["image"] = None  # a run still going: snapshots only
    page, problems = open_report(report.write_report(tmp_path / "out.html", record))
    assert shown(page)["label"] == "iteration 20 / 20"
    uri = (
        "data:image/png;base64,"
        + base64.b64encode((tmp_path / "out_v0_0010.png").read_bytes()).decode()
    )
    page.evaluate(
        """(uri) => {
          window.jaxnstReport.addRows(0, {iteration: [21, 22, 23, 24, 25, 26, 27, 28, 29, 30],
                                          total: Array(10).fill(1.5e6)});
          window.jaxnstReport.addSnapshot(0, 30, uri);
        }""",
        uri,
    )
    now = shown(page)
    assert now["label"] == "iteration 30 / 30" and now["marker"] == 30 and now["src"] == uri
    assert problems == []


def test_a_500_iteration_report_at_512_px_opens_in_under_a_second(tmp_path, open_report):
    record = make_record(tmp_path, variants=2, iterations=500, every=25, side=512)
    path = report.write_report(tmp_path / "out.html", record)
    snaps = snapshot_bytes(record)
    assert path.stat().st_size < 2 * snaps, (path.stat().st_size, snaps)
    times = []
    for _ in range(2):  # the first open also warms the browser's caches; report the worse
        page, problems = open_report(path)
        times.append(page.evaluate("window.jaxnstReport.loadMs"))
        assert problems == []
    print(f"report {path.stat().st_size / 1e6:.1f} MB, snapshots {snaps / 1e6:.1f} MB, "
          f"ready after {times} ms")  # fmt: skip
    assert max(times) < 1000, times
    page.keyboard.press("Home")
    assert shown(page)["marker"] == 25


def test_a_video_reports_frames_take_the_viewers_place_and_the_keys(tmp_path, open_report):
    path = report.write_report(tmp_path / "v.html", video_record())
    page, problems = open_report(path)
    assert page.locator("#viewer").is_hidden()  # no snapshots: the frames are the main view
    assert page.locator("main > #video").count() == 1
    assert page.locator("#video-label").inner_text() == "frame 1 / 3"
    page.locator("h1").click()
    page.keyboard.press("ArrowRight")
    assert page.locator("#video-label").inner_text() == "frame 2 / 3"
    page.keyboard.press("End")
    assert page.locator("#video-label").inner_text() == "frame 3 / 3"
    assert page.locator("#plot").get_attribute("data-marker-iteration") == ""  # no trackbar
    assert problems == []
