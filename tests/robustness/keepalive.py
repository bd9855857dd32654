"""One raw HTTP/1.1 keep-alive connection (h11, the parser uvicorn itself uses): a test can tell a
reused connection from a new one, which httpx and http.client hide by reconnecting silently."""
from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import h11


class ServerClosed(ConnectionError):
    """The server closed (or reset) the keep-alive connection."""


class KeepAlive:
    def __init__(self, url: str, timeout: float = 60):
        parts = urlsplit(url)
        self.host_header = parts.netloc
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        self.conn = h11.Connection(h11.CLIENT)
        self.requests = 0

    def request(self, method: str, path: str, body: bytes | dict | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], object]:
        if isinstance(body, dict) or isinstance(body, list):
            body = json.dumps(body).encode()
        body = body or b""
        hdrs = {"host": self.host_header, "content-length": str(len(body)), **(headers or {})}
        if body and "content-type" not in hdrs:
            hdrs["content-type"] = "application/json"
        try:
            self.sock.sendall(self.conn.send(h11.Request(method=method, target=path, headers=list(hdrs.items()))))
            if body:
                self.sock.sendall(self.conn.send(h11.Data(data=body)))
            self.sock.sendall(self.conn.send(h11.EndOfMessage()))
        except OSError as exc:
            raise ServerClosed(f"request {self.requests + 1}: send failed: {exc}") from None
        status, resp_headers, data = None, {}, b""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    chunk = self.sock.recv(1 << 16)
                except OSError as exc:
                    raise ServerClosed(f"request {self.requests + 1}: {exc}") from None
                if not chunk:
                    raise ServerClosed(f"request {self.requests + 1}: the server closed the connection")
                self.conn.receive_data(chunk)
            elif isinstance(event, h11.Response):
                status = event.status_code
                resp_headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                data += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ServerClosed(f"request {self.requests + 1}: connection closed")
        self.requests += 1
        if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is h11.MUST_CLOSE:
            raise ServerClosed(f"request {self.requests}: the server asked to close the connection")
        self.conn.start_next_cycle()
        ctype = resp_headers.get("content-type", "")
        return status, resp_headers, (json.loads(data) if ctype.startswith("application/json") else data)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "KeepAlive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
