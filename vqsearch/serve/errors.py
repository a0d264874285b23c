"""Every error the server answers is {"error": "<one clear line>"} with a 4xx status (5xx only for a
real server fault): our own, FastAPI's validation errors and Starlette's (unknown route, method)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from vqsearch.errors import VQSearchError

log = logging.getLogger("vqsearch.serve")


class ApiError(Exception):
    """A request that cannot be answered, with its HTTP status and the line that says why."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_line(error: RequestValidationError) -> str:
    """FastAPI's first complaint as one line: which field (e.g. `top_k`, `frame`) and what is wrong."""
    first = error.errors()[0] if error.errors() else {}
    loc = first.get("loc", ())
    where = ".".join(part for part in loc[1:] if isinstance(part, str)) or f"request {loc[0] if loc else ''}".strip()
    return f"{where}: {first.get('msg', 'invalid')}"


def install(app: FastAPI) -> None:
    """Answer every error in the one shape. A VQSearchError is the user's input (400); routes that
    know better (a bad crop: 422, a write refused: 409) raise ApiError themselves."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.message, error.headers)

    @app.exception_handler(VQSearchError)
    async def user_error(request: Request, error: VQSearchError) -> JSONResponse:
        return error_response(400, str(error))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(422, _validation_line(error))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        said = {404: f"no such page: {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
        message = said.get(error.status_code, str(error.detail))
        return error_response(error.status_code, message, getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def fault(request: Request, error: Exception) -> JSONResponse:
        log.exception("server fault on %s %s", request.method, request.url.path)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return error_response(500, f"server fault: {type(error).__name__}: {first}")
