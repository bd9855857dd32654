"""What every request passes before it reaches an endpoint: the Host check, the API key, the body
size limit, and a last catch that turns an unexpected exception into a 500 in OpenAI's shape.

Written as one plain ASGI middleware rather than Starlette's ``BaseHTTPMiddleware`` or
``TrustedHostMiddleware``, for three reasons: every refusal must be an OpenAI-shaped JSON error
(Starlette's are plain text); the body limit must count bytes as they arrive (a chunked upload has
no Content-Length); and an exception must be answered *here*, inside Starlette's
``ServerErrorMiddleware``, which re-raises after its 500 handler, so that uvicorn then closes the
keep-alive connection and the client's next request on it is reset.
"""
from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from typing import Any

from starlette.exceptions import HTTPException

from ..core.log import get_logger

log = get_logger(__name__)

# Host names a loopback-only server answers to by default (a browser page whose DNS name was
# rebound to 127.0.0.1 sends its own name and is refused).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
PUBLIC_PATHS = ("/health",)   # load balancers and supervisors probe without a key


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_allowed_hosts(bind_host: str) -> list[str]:
    """Loopback names for a server bound to loopback; any host for one bound to an interface the
    network reaches (there the API key is the protection, and `ragtune serve` warns without one)."""
    if is_loopback(bind_host):
        names = [*LOOPBACK_HOSTS]
        return names if bind_host.lower() in names else [*names, bind_host.lower()]
    return ["*"]


def host_name(header: str) -> str:
    """``example.com:8000`` -> ``example.com``; ``[::1]:8000`` -> ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    name, sep, port = header.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else header


class RequestGuard:
    """ASGI middleware: Host allow-list, bearer key, request body limit, crash -> 500 JSON."""

    def __init__(self, app: Any, *, api_key: str | None, allowed_hosts: Iterable[str], max_request_bytes: int,
                 counters: dict[str, int]):
        self.app, self.api_key, self.max_bytes, self.counters = app, api_key, max_request_bytes, counters
        hosts = {h.strip().lower() for h in allowed_hosts}
        self.any_host = "*" in hosts
        self.hosts = {host_name(h) for h in hosts - {"*"}}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.counters["requests"] += 1
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            return await self._reply(send, *refusal)
        started = False

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, self._limited(receive), tracking_send)
        except Exception as exc:
            self.counters["errors"] += 1
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if not started:   # else the stream already reported it (see app._sse)
                await self._reply(send, 500, error_body(f"internal error: {type(exc).__name__}: {exc}",
                                                        "server_error"))

    def _refusal(self, scope, headers: dict[str, str]) -> tuple[int, dict] | None:
        host = host_name(headers.get("host", ""))
        if not self.any_host and host not in self.hosts:
            return 400, error_body(f"Host header {headers.get('host', '')!r} is not allowed on this server "
                                   f"(allowed: {', '.join(sorted(self.hosts))}); set allowed_hosts "
                                   "(--allowed-hosts) to serve other names", "invalid_request_error",
                                   code="invalid_host")
        if self.api_key and scope.get("path") not in PUBLIC_PATHS and not _key_ok(headers, self.api_key):
            return 401, error_body("invalid or missing API key: send 'Authorization: Bearer <key>'",
                                   "invalid_request_error", code="invalid_api_key")
        length = headers.get("content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > self.max_bytes):
            return 413, self._too_large(length)
        return None

    def _too_large(self, length: str | None = None) -> dict:
        size = f" ({length} bytes)" if length is not None else ""
        return error_body(f"request body too large{size}: this server accepts at most {self.max_bytes} bytes "
                          "(max_request_bytes)", "invalid_request_error", code="request_too_large")

    def _limited(self, receive):
        """``receive`` that counts body bytes; past the limit the request fails with 413 (FastAPI
        re-raises an HTTPException from reading the body as is)."""
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self._too_large()["error"]["message"])
            return message

        return limited

    async def _reply(self, send, status: int, body: dict) -> None:
        if status >= 400:
            self.counters["errors"] += 1
        payload = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def _key_ok(headers: dict[str, str], api_key: str) -> bool:
    import hmac

    scheme, _, token = headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())
