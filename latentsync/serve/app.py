"""The HTTP side of `latentsync serve`: REST routes under /v1 (described at /openapi.json), health checks, the
optional API token, and the web page mounted at /.

Every error a client can cause is a 4xx with a JSON body `{"error": sentence, "hint": what to do}`; the uploads
are checked (size, media, duration, options) before a job is queued, so no model work is spent on bad input.
"""

from __future__ import annotations

import hmac
import html
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, File, Form, HTTPException, Path as PathParam, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import InputError
from .store import JobStore
from .uploads import AUDIO_SUFFIXES, VIDEO_SUFFIXES, Limits, TooLarge, check_media, discard, job_settings, save_upload, \
    stored_name
from .worker import WorkerPool

log = logging.getLogger(__name__)

TOKEN_COOKIE = "latentsync_token"
JOB_ID = Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$", description="job id, as returned by POST /v1/jobs")]
OPEN_PATHS = ("/login",)  # reachable without the token: where a browser gives it
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]  # store.STATES


@dataclass(frozen=True)
class ServerConfig:
    """What the routes need to know besides the store and the workers."""

    token: str | None
    limits: Limits
    versions: tuple[str, ...]  # the first is the default
    face_backend: str  # for the web page's face preview
    checkpoint_dir: str | None = None
    web: bool = True


class ErrorBody(BaseModel):
    error: str
    hint: str | None = None


class JobBody(BaseModel):
    id: str
    state: JobState
    stage: str | None
    progress: float
    created: float
    started: float | None
    finished: float | None
    attempts: int
    settings: dict
    video_name: str | None
    audio_name: str | None
    error: str | None
    report: dict | None
    result: str | None


class JobList(BaseModel):
    jobs: list[JobBody]


class DeleteBody(BaseModel):
    id: str
    outcome: Literal["cancelled", "cancelling", "removed"]


ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 409, 413, 422)}


def error_response(status: int, message: str, hint: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "hint": hint}, status_code=status)


def create_app(config: ServerConfig, store: JobStore, pool: WorkerPool) -> FastAPI:
    """The FastAPI app: routes, error handlers, token check and (when `config.web`) the Gradio page."""
    app = FastAPI(title="LatentSync", version=__version__,
                  description="Audio-driven lip sync: submit a video and a speech track, poll the job, fetch the MP4.")
    limits = config.limits
    install_guards(app, config)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        """The server answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "models not loaded (yet)"}})
    def readyz():
        """The models are loaded on every worker (503 until then, with the loading error if there is one)."""
        status = pool.status()
        return JSONResponse(status, status_code=200 if status["ready"] else 503)

    @app.post("/v1/jobs", status_code=201, response_model=JobBody, tags=["jobs"], responses=ERRORS)
    def submit_job(
        video: Annotated[UploadFile, File(description="the video to lip-sync")],
        audio: Annotated[UploadFile, File(description="the speech it should say")],
        steps: Annotated[int | None, Form(description="denoising steps (default 20)")] = None,
        guidance: Annotated[float | None, Form(description="audio guidance scale, at least 1.0 (default 1.5)")] = None,
        seed: Annotated[int | None, Form(description="random seed (default: random, see the report)")] = None,
        version: Annotated[str | None, Form(description="LatentSync version (default: the server's --version)")] = None,
        face_x: Annotated[float | None, Form(description="pick the face containing this pixel (with face_y)")] = None,
        face_y: Annotated[float | None, Form(description="see face_x")] = None,
        face_index: Annotated[int | None, Form(description="pick the N-th face from the left, from 0")] = None,
    ):
        """Queue a job: the uploads are checked (size, readable media, duration, options) first."""
        settings = job_settings(steps, guidance, seed, version, face_x, face_y, face_index, versions=config.versions)
        folder = store.new_incoming()
        try:
            video_file = stored_name("video", video.filename, VIDEO_SUFFIXES)
            audio_file = stored_name("audio", audio.filename, AUDIO_SUFFIXES)
            save_upload(video.file, folder / video_file, limits, "video")
            save_upload(audio.file, folder / audio_file, limits, "audio")
            check_media(folder / video_file, folder / audio_file, settings, limits)
            job = store.add(folder, video_file, audio_file, settings, _display_name(video.filename),
                            _display_name(audio.filename))
        except BaseException:
            discard(folder)
            raise
        return JSONResponse(job.public(), status_code=201)

    @app.get("/v1/jobs", response_model=JobList, tags=["jobs"], responses=ERRORS)
    def list_jobs(
        state: Annotated[JobState | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict:
        """Jobs, newest first."""
        return {"jobs": [job.public() for job in store.list(state, limit)]}

    @app.get("/v1/jobs/{job_id}", response_model=JobBody, tags=["jobs"], responses=ERRORS)
    def get_job(job_id: JOB_ID) -> dict:
        """State, progress (0-1, with the stage), the run report when it succeeded, the error when it failed."""
        return _known(store, job_id).public()

    @app.get("/v1/jobs/{job_id}/result", tags=["jobs"], response_class=FileResponse,
             responses={**ERRORS, 200: {"content": {"video/mp4": {}}, "description": "the lip-synced video"}})
    def get_result(job_id: JOB_ID):
        """The lip-synced MP4 of a succeeded job."""
        job = _known(store, job_id)
        path = store.result_path(job_id)
        if job.state != "succeeded" or not path.exists():
            raise HTTPException(409, f"job {job_id} has no result: it is {job.state}")
        return FileResponse(path, media_type="video/mp4", filename=f"latentsync_{job_id}.mp4")

    @app.delete("/v1/jobs/{job_id}", response_model=DeleteBody, tags=["jobs"], responses=ERRORS)
    def delete_job(job_id: JOB_ID) -> dict:
        """Cancel a queued or running job; remove a finished one with its files."""
        outcome = store.cancel_or_remove(job_id)
        if outcome is None:
            raise HTTPException(404, f"no job {job_id}")
        return {"id": job_id, "outcome": outcome}

    if config.web:
        from .webui import mount_page

        mount_page(app, config, store)
    return app


def install_guards(app: FastAPI, config: ServerConfig) -> None:
    """The token check, the request size limit, the login page and the JSON error handlers."""
    token = config.token
    # Two files plus form fields: anything much larger is refused before its body is read.
    max_body = 2 * config.limits.max_upload_bytes + 2**20

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if token and request.url.path not in OPEN_PATHS and not _authorized(request, token):
            if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                return RedirectResponse("/login", status_code=303)
            response = error_response(401, "missing or wrong API token", "send the header Authorization: Bearer TOKEN")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        allowed = _route_methods(app, request.url.path)
        if allowed and request.method not in allowed:  # else the page mounted at / would answer 404
            return JSONResponse({"error": f"{request.method} is not allowed on {request.url.path}",
                                 "hint": f"use {', '.join(sorted(allowed))}"},
                                status_code=405, headers={"Allow": ", ".join(sorted(allowed))})
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_body:
            return error_response(413, f"the request is larger than this server's limit of "
                                       f"{config.limits.max_upload_bytes / 2**20:g} MB per file",
                                  "send a shorter or more compressed file")
        return await call_next(request)

    @app.get("/login", include_in_schema=False)
    def login_page() -> HTMLResponse:
        return HTMLResponse(_login_html(""))

    @app.post("/login", include_in_schema=False)
    def login(token_field: Annotated[str, Form(alias="token")] = "") -> HTMLResponse:
        if not token or not hmac.compare_digest(token_field.encode(), token.encode()):
            return HTMLResponse(_login_html("That is not this server's token."), status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    @app.exception_handler(TooLarge)
    async def too_large(request: Request, exc: TooLarge):
        return error_response(413, exc.message, exc.hint)

    @app.exception_handler(InputError)
    async def bad_input(request: Request, exc: InputError):
        return error_response(400, exc.message, exc.hint)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        # Only locations and messages: the raw input may be binary (an upload) and is not echoed.
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors())
        return error_response(422, f"invalid request: {problems}", "see /openapi.json for the fields")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal server error", "the server log has the details")


def _route_methods(app: FastAPI, path: str) -> set[str]:
    """The methods of the API route matching `path` (empty when none does)."""
    methods: set[str] = set()
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path_regex.match(path):
            methods |= route.methods | ({"HEAD"} if "GET" in route.methods else set())
    return methods


def _authorized(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    given = header[7:] if header[:7].lower() == "bearer " else request.cookies.get(TOKEN_COOKIE, "")
    return hmac.compare_digest(given.encode(), token.encode())


def _known(store: JobStore, job_id: str):
    job = store.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id} (unknown, removed or expired)")
    return job


def _display_name(name: str | None) -> str | None:
    """An uploaded file name as shown in job listings: its last part, printable, at most 200 characters."""
    if not name:
        return None
    return "".join(c for c in Path(name.replace("\\", "/")).name if c.isprintable())[:200] or None


def _login_html(message: str) -> str:
    note = f"<p style='color:#b00'>{html.escape(message)}</p>" if message else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>LatentSync: sign in</title></head>"
        "<body style='font-family:sans-serif;max-width:28em;margin:4em auto'><h1>LatentSync</h1>"
        f"<p>This server needs its API token.</p>{note}<form method='post' action='/login'>"
        "<input type='password' name='token' id='token' placeholder='token' autofocus size='40'> "
        "<button type='submit' id='sign-in'>Sign in</button></form></body></html>"
    )
