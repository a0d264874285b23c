"""The FastAPI application: contract.md's HTTP API over one served index, the page, the API docs.

Every route is a plain function: FastAPI runs it in its thread pool, so frames are decoded and
jobs polled while a query (one at a time, `ServedIndex`) runs. The docs (/docs, /redoc) and the
page load their scripts from this server (fastapi-offline ships Swagger UI and ReDoc).
"""

from __future__ import annotations

import socket
import sys
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Security, UploadFile
from fastapi.responses import FileResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from queries.engine import UploadedCrop
from vqsearch.errors import VQSearchError
from vqsearch.serve import errors
from vqsearch.serve.errors import ApiError
from vqsearch.serve.frames import FrameReader, parse_box
from vqsearch.serve.index import ServedIndex
from vqsearch.serve.jobs import Jobs
from vqsearch.serve.limits import BodyLimit, check_bind, check_token

STATIC = Path(__file__).parent / "static"

DESCRIPTION = """Where did I last see it? The JSON API of `vqsearch serve` (contract.md, HTTP section).

* `POST /api/query` answers from the index at once (`relocate=false`, coarse track boxes, a few ms);
  `relocate=true` also decodes the last occurrence and gives it a tight box on every frame
  (VQ2D steps 3-5, as `vqsearch query` does by default: about 1-5 s). The page asks both, in turn.
* Frames are asked by video id and frame number: `GET /api/videos/{id}/frames/{n}.jpg?box=x,y,w,h`.
* With a token (`--token` or `$VQSEARCH_TOKEN`), every `/api/` call carries `Authorization: Bearer <token>`.
* Every error is `{"error": "<one line>"}` with a 4xx status (5xx only for a server fault).
"""


class ErrorBody(BaseModel):
    error: str = Field(description="One clear line: what is wrong, and what to do where it helps.")


ERRORS = {401: "No token, or not the server's (when it has one).", 404: "No such video, frame, job or page.",
          409: "The index is empty, damaged, or being written by another writer.",
          413: "The request body is over 10 MB.", 422: "A field is missing or wrong, or the crop is no usable image."}


class IndexRequest(BaseModel):
    path: str = Field(min_length=1, max_length=4096, pattern=r"^[^\x00]+$",
                      description="A video file on the server, as `vqsearch index` would be given it.")


def create_app(root: Path, token: str | None = None, device: str = "cpu") -> FastAPI:
    """The application over the index at `root`; the store and the model load here, once."""
    from fastapi_offline import FastAPIOffline

    from vqsearch import __version__

    served = ServedIndex(root, device)
    jobs = Jobs(served)
    frames = FrameReader()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        jobs.close()

    app = FastAPIOffline(title="vqsearch", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                         static_url="/docs-static", favicon_url="/static/favicon.svg",
                         swagger_ui_parameters={"validatorUrl": None})  # Swagger UI's validator is online
    app.state.served = served
    errors.install(app)
    app.add_middleware(BodyLimit)
    bearer = HTTPBearer(auto_error=False, description="The server's --token, when it has one.")

    def authorised(credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
        check_token(token, credentials.credentials if credentials else None)

    api = APIRouter(prefix="/api", dependencies=[Depends(authorised)],
                    responses={code: {"model": ErrorBody, "description": said} for code, said in ERRORS.items()})

    @api.get("/health")
    def health() -> dict:
        """The model, and how many videos and tracks the index holds."""
        videos = served.videos()
        return {"ok": True, "model": served.model_name, "videos": len(videos),
                "tracks": sum(video["tracks"] for video in videos)}

    @api.get("/videos")
    def videos() -> dict:
        """Indexed videos: `list --json`'s fields, their id, size and indexing stats."""
        return {"videos": served.videos()}

    @api.post("/query")
    def query(text: str | None = Form(None, max_length=1000, description="What to look for, in words."),
              crop: UploadFile | None = File(None, description="A photo or crop of the object (PNG, JPEG...)."),
              video_id: int | None = Form(None, description="Search only this video."),
              top_k: int = Form(5, ge=1, le=100, description="How many results to list."),
              relocate: bool = Form(False, description="Tight boxes on every frame of the last occurrence "
                                                       "(decodes video: seconds, not milliseconds).")) -> dict:
        """Where was it last seen? `query --json`'s object; every HIT also has `video_id`, and
        `occurrences` lists every sighting the occurrence rule kept, for a timeline."""
        if text is None and crop is None:
            raise ApiError(422, "give text, crop or both")
        if text is not None and not text.strip():
            raise ApiError(422, "text is empty: say what to look for, or send only a crop")
        upload = UploadedCrop(Path(crop.filename or "crop").name, crop.file.read()) if crop is not None else None
        try:
            return served.query(text, upload, video_id, top_k, relocate)
        except VQSearchError as error:  # an unreadable or oversized crop, a model without a text side
            raise ApiError(422, str(error)) from None

    @api.post("/index", status_code=202)
    def index(request: IndexRequest) -> dict:
        """Index a video file on the server in the background; poll `GET /api/jobs/{id}`."""
        return {"job": jobs.submit(request.path).id}

    @api.get("/jobs")
    def all_jobs() -> dict:
        """Every job this server ran or runs, oldest first."""
        return {"jobs": [job.to_json() for job in jobs.all()]}

    @api.get("/jobs/{job_id}")
    def job(job_id: str) -> dict:
        """A job's state (queued, running, done, failed), progress 0-1, error line and result."""
        found = jobs.get(job_id)
        if found is None:
            raise ApiError(404, f"no job {job_id[:40]!r}")
        return found.to_json()

    @api.delete("/videos/{video_id}")
    def remove(video_id: int) -> dict:
        """Remove a video's tracks and rows from the index (409 while an index job is writing)."""
        return {"removed": served.remove(video_id)}

    @api.get("/videos/{video_id}/frames/{frame}.jpg", response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}, "description": "The frame as a JPEG."}})
    def frame(video_id: int, frame: int,
              box: str | None = Query(None, max_length=100, description="x,y,w,h in the video's pixels, drawn."),
              width: int | None = Query(None, ge=16, le=4096, description="Scale down to this width.")) -> Response:
        """Frame `frame` (original numbering, from 0) of an indexed video."""
        video = served.video(video_id)
        jpeg = frames.jpeg(video, frame, parse_box(box, video) if box is not None else None, width)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})

    app.include_router(api)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    return app


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, or one line that says why there is none (the port is taken...)."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # asyncio sets TCP_NODELAY only then
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)  # connections wait in the backlog while the index loads
    except (OSError, OverflowError) as error:
        raise VQSearchError(f"cannot listen on {host}:{port}: {getattr(error, 'strerror', None) or error}") from None
    return sock


def serve(root: Path, host: str, port: int, token: str | None, device: str = "cpu") -> None:
    """`vqsearch serve`: refuse an unsafe address, take the port, load the index, answer until stopped."""
    import uvicorn

    check_bind(host, token)
    sock = _listen(host, port)
    app = create_app(root, token, device)
    videos = len(app.state.served.videos())
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    print(f"vqsearch: serving {root} ({videos} videos{'' if videos else ': index some from the Library'}) "
          f"on http://{shown}:{sock.getsockname()[1]}/ (API docs: /docs){', token required' if token else ''}",
          file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
