"""The routes of ``jaxnst serve``: the page, uploads, runs, their events, frames and files.

=============================  ==================================================================
``GET /``                      the page (``serve_page.html``; the form from ``webform``)
``POST /uploads``              an image as the request body (name in ``X-Filename``): checked
``POST /runs``                 ``{"content": id, "styles": [id, ...], "options": {...}}``
``POST /runs/ID/stop``         stop a run (or cancel it while it waits)
``GET /events``                server-sent events: the list of runs, on every change
``GET /runs/ID/view``          the run's live page (its report once it has ended)
``GET /runs/ID/events``        server-sent events of one run: status, rows, frames
``GET /runs/ID/frames/K/IT``   a frame of variant K at iteration IT (PNG)
``GET /runs/ID/files/NAME``    a file the run wrote (result, sidecar, history, report, ...)
=============================  ==================================================================

Requests name runs, uploads and files only by the ids and names the server gave them (looked up
in its own tables, never joined to a path), so none reaches outside the server's folder. Every
error is one line of JSON, ``{"error": ...}``. Starlette is imported inside the functions: this
module imports without the ``web`` extra.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image

from jaxnst import report, webform
from jaxnst.errors import ConfigError, ImageError, JaxnstError
from jaxnst.jobs import FINAL, Job, JobQueue, Upload
from jaxnst.problem import check_masks

MAX_JSON = 1 << 16  # bytes of a run request
PAGE_CSP = (
    "default-src 'none'; img-src 'self' data: blob:; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'; connect-src 'self'; frame-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
LIVE_CSP = (
    "default-src 'none'; img-src 'self' data: blob:; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'"
)
FRAMED = "; frame-ancestors 'self'"  # a run's page and report show inside the page
MEDIA = {".png": "image/png", ".gif": "image/gif", ".json": "application/json",
         ".csv": "text/csv", ".html": "text/html"}  # fmt: skip


@dataclass
class Web:
    """What the routes share: the folder, the queue, the uploads, the limits."""

    root: Path
    max_upload: int
    queue: JobQueue = field(init=False)
    uploads: dict[str, Upload] = field(default_factory=dict)
    uploaded: int = 0  # bytes kept
    closing: bool = False

    def __post_init__(self) -> None:
        (self.root / "uploads").mkdir(parents=True, exist_ok=True)
        (self.root / "runs").mkdir(exist_ok=True)
        self.queue = JobQueue(self.root / "runs")

    def close_streams(self) -> None:
        """End every event stream now (the server is stopping)."""
        self.closing = True
        self.queue.changes.bump()
        for job in self.queue.jobs.values():
            job.events.bump()


# ---------------------------------------------------------------------- responses
def error(status: int, message: str) -> Any:
    """One line of JSON: {"error": message}."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


def html_page(text: str, csp: str) -> Any:
    from starlette.responses import HTMLResponse

    return HTMLResponse(text, headers={"Content-Security-Policy": csp})


def web(request: Any) -> Web:
    return request.app.state.web


def find_job(request: Any) -> Job | None:
    return web(request).queue.jobs.get(request.path_params["id"])


# ---------------------------------------------------------------------- routes
async def page(request: Any) -> Any:
    state = web(request)
    config = {
        "options": webform.form_fields(),
        "maxUploadBytes": state.max_upload,
        "device": request.app.state.device,
    }
    template = resources.files("jaxnst").joinpath("serve_page.html").read_text("utf-8")
    return html_page(template.replace("@@CONFIG@@", report.script_json(config)), PAGE_CSP)


async def upload(request: Any) -> Any:
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse

    state, name = web(request), webform.display_name(request.headers.get("x-filename", ""))
    if state.uploaded > 16 * state.max_upload:
        return error(507, "the server keeps no more uploads; restart it to start afresh")
    uid = secrets.token_hex(8)
    part, size, digest = state.root / "uploads" / f"{uid}.part", 0, hashlib.sha256()
    try:
        with open(part, "wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size <= state.max_upload:
                    f.write(chunk)
                    digest.update(chunk)
                elif size > 8 * state.max_upload:
                    break  # read the rest of a too-large body only so far: then answer
        if size > state.max_upload:
            return error(413, webform.too_large(name, size, state.max_upload))
        if size == 0:
            return error(400, f"{name}: empty file, not an image")
        try:
            width, height, thumb = await run_in_threadpool(webform.check_image, part, name)
        except ImageError as err:
            return error(415, str(err))
        with Image.open(part) as pic:
            suffix = {"JPEG": ".jpg"}.get(pic.format or "", f".{(pic.format or 'img').lower()}")
        path = part.with_suffix(suffix)
        part.rename(path)
    finally:
        part.unlink(missing_ok=True)
    state.uploads[uid] = Upload(uid, name, path, digest.hexdigest(), width, height)
    state.uploaded += size
    body = {"id": uid, "name": name, "width": width, "height": height, "thumb": thumb}
    return JSONResponse(body, status_code=201)


async def read_json(request: Any) -> Any:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON:
            raise ConfigError(f"the request is larger than {MAX_JSON} bytes")
    try:
        return json.loads(body)
    except ValueError:
        raise ConfigError("the request is not JSON") from None


async def submit(request: Any) -> Any:
    from starlette.responses import JSONResponse

    state = web(request)
    try:
        data = await read_json(request)
        if not isinstance(data, dict):
            raise ConfigError("the request must be a JSON object")
        content = state.uploads.get(str(data.get("content")))
        if content is None:
            raise ConfigError("choose a content image (drop one on the page)")
        ids = data.get("styles")
        styles = [state.uploads.get(str(i)) for i in ids] if isinstance(ids, list) else []
        if not styles or None in styles:
            raise ConfigError("choose one or more style images (drop them on the page)")
        cfg = webform.config_from_form(data.get("options") or {})
        cfg.blend_weights(len(styles))  # what a run would refuse at once, refused here
        check_masks(cfg, (), ())
        job = state.queue.submit(content, styles, cfg)
    except JaxnstError as err:
        return error(400, str(err))
    return JSONResponse({"id": job.id, "view": job.url("view"), "job": job.summary()}, 201)


async def stop(request: Any) -> Any:
    from starlette.responses import JSONResponse

    job = find_job(request)
    if job is None:
        return error(404, "no such run")
    web(request).queue.stop(job)
    return JSONResponse(job.summary())


def sse(kind: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def event_stream(body: Any) -> Any:
    from starlette.responses import StreamingResponse

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


async def jobs_events(request: Any) -> Any:
    state = web(request)

    async def body():
        seen = None
        while not state.closing:
            version = state.queue.changes.version
            if version != seen:
                seen = version
                yield sse("jobs", {"jobs": [j.summary() for j in state.queue.jobs.values()]})
            elif await state.queue.changes.wait(seen, 15.0) == seen:
                yield ": keep-alive\n\n"

    return event_stream(body())


async def run_events(request: Any) -> Any:
    from starlette.responses import Response

    state, job = web(request), find_job(request)
    if job is None:
        return error(404, "no such run")
    last = request.headers.get("last-event-id", request.query_params.get("after", "-1"))
    start = int(last) + 1 if last.lstrip("-").isdigit() else 0
    if job.events.closed and start >= len(job.events.items):
        return Response(status_code=204)  # nothing more, ever: EventSource stops asking

    async def body():
        n = start
        while not state.closing:
            version = job.events.version
            items = job.events.since(n)
            for i, kind, data in items:
                yield sse(kind, data, i)
            n += len(items)
            if job.events.closed and n >= len(job.events.items):
                return
            if not items and await job.events.wait(version, 15.0) == version:
                yield ": keep-alive\n\n"

    return event_stream(body())


async def view(request: Any) -> Any:
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import RedirectResponse

    job = find_job(request)
    if job is None:
        return error(404, "no such run")
    if job.state in FINAL and job.plan.report.name in job.files:
        return RedirectResponse(job.url(f"files/{job.plan.report.name}"), status_code=303)
    record = {
        "title": job.plan.output.name,
        "subtitle": job.command,
        "content": job.content.path,
        "styles": [s.path for s in job.styles],
        "y_label": "weighted loss",
        "variants": [
            {
                "label": path.name,
                "params": {"seed": seed},
                "image": None,
                "sidecar": {"command": job.command, "config": job.cfg.to_dict()},
            }
            for path, seed in zip(job.plan.images, job.plan.seeds, strict=True)
        ],  # fmt: skip
        "live": {"events": job.url("events")},
    }
    script = resources.files("jaxnst").joinpath("live.js").read_text("utf-8")
    text = await run_in_threadpool(report.build_report, record, csp=LIVE_CSP, script=script)
    return html_page(text, LIVE_CSP + FRAMED)


async def frame(request: Any) -> Any:
    from starlette.responses import FileResponse

    job = find_job(request)
    key = (request.path_params["k"], request.path_params["it"])
    if job is None or key not in job.frames:
        return error(404, "no such frame")
    return FileResponse(job.frames[key], media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600"})  # fmt: skip


async def download(request: Any) -> Any:
    from starlette.responses import FileResponse

    job, name = find_job(request), request.path_params["name"]
    if job is None or name not in job.files:  # only what the run wrote, by its own names
        return error(404, "no such file")
    path = job.files[name]
    headers = {"Content-Security-Policy": report.REPORT_CSP + FRAMED}
    kind = "attachment" if request.query_params.get("download") else "inline"
    return FileResponse(path, media_type=MEDIA.get(path.suffix, "application/octet-stream"),
                        filename=name, content_disposition_type=kind, headers=headers)  # fmt: skip
