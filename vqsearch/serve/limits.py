"""What a request may carry and where the server may listen: safe by default.

- A body over MAX_BODY_BYTES is refused with 413 before any of it is parsed (a crop is resized to
  96 px: 10 MB is far more than any photo of an object needs); the crop's pixels are capped by
  the engine's own `load_crop` (16 megapixels).
- With a token, every /api/ call carries `Authorization: Bearer <token>`, compared in constant time.
- A host that is not a loopback address needs a token: the API reads video files on the server.
"""

from __future__ import annotations

import hmac
import ipaddress

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vqsearch.errors import VQSearchError
from vqsearch.serve.errors import ApiError, error_response

MAX_BODY_BYTES = 10 * 1024 * 1024


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost may resolve to anything
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse, in one line, to listen beyond this machine without a token."""
    if not is_loopback(host) and not token:
        raise VQSearchError(f"--host {host} is not a loopback address: anyone who reaches it could read and index "
                            "files; give --token T (or set $VQSEARCH_TOKEN), or serve on 127.0.0.1")


def check_token(expected: str | None, given: str | None) -> None:
    """Pass when no token is set, or when the bearer token given is it; else 401."""
    if expected is not None and not (given and hmac.compare_digest(given.encode(), expected.encode())):
        raise ApiError(401, "this server needs its token: send the header Authorization: Bearer <token>",
                       {"WWW-Authenticate": "Bearer"})


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes gets 413, checked on Content-Length and counted
    as it arrives (a chunked body declares none); a body within it is passed on as received."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit():
            await error_response(400, "Content-Length is not a number")(scope, receive, send)
            return
        if int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await error_response(413, f"request body over {self.limit // (1024 * 1024)} MB: send a smaller image "
                                  "(a crop of the object is enough)")(scope, receive, send)
