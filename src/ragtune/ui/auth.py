"""``--api-key``: every page, file and endpoint needs the key, as a cookie set by the login page
(browsers), an ``Authorization: Bearer KEY`` header (scripts) or ``?key=KEY`` once (a link printed
by ``ragtune ui``; it is swapped for the cookie and removed from the address bar).

Without a key the UI is still only reachable from this machine (bound to 127.0.0.1), and two
checks keep other web pages the browser has open from driving it: state-changing requests need
the ``X-Ragtune-UI`` header (a cross-site page cannot send it without a CORS preflight, which this
server never grants) and the Host header must name this machine (DNS rebinding).
"""
from __future__ import annotations

import hashlib
import hmac
import html
from urllib.parse import parse_qs, urlencode

COOKIE = "ragtune_ui"
CSRF_HEADER = "x-ragtune-ui"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def token(api_key: str) -> str:
    """The cookie value: derived from the key, so the key itself is never stored in the browser."""
    return hmac.new(api_key.encode(), b"ragtune-ui-session", hashlib.sha256).hexdigest()


def _bearer(headers) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def authorized(request, api_key: str) -> bool:
    cookie = request.cookies.get(COOKIE)
    if cookie and hmac.compare_digest(cookie.encode(), token(api_key).encode()):
        return True
    bearer = _bearer(request.headers)
    return bool(bearer and hmac.compare_digest(bearer.encode(), api_key.encode()))


def host_ok(request, bound_host: str) -> bool:
    if bound_host not in LOOPBACK:
        return True
    host = request.headers.get("host", "")
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return name in LOOPBACK


def login_page(next_path: str = "/", error: str | None = None) -> str:
    """Self-contained (no static files: those need the key too)."""
    msg = f'<p class="err">{html.escape(error)}</p>' if error else ""
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>ragtune ui: sign in</title>
<style>body{{font-family:system-ui,sans-serif;background:#f5f6f8;display:flex;justify-content:center;padding-top:12vh}}
form{{background:#fff;padding:28px 32px;border-radius:8px;box-shadow:0 1px 4px #0002;min-width:320px}}
h1{{font-size:20px;margin:0 0 16px}}input{{width:100%;padding:8px;margin:8px 0 14px;box-sizing:border-box;font-size:14px}}
button{{padding:8px 18px;font-size:14px}}.err{{color:#b00020}}</style></head><body>
<form method="post" action="/login"><h1>ragtune ui</h1>{msg}
<label for="key">API key (the one given to <code>ragtune ui --api-key</code>)</label>
<input id="key" name="key" type="password" autofocus autocomplete="current-password">
<input type="hidden" name="next" value="{html.escape(next_path, quote=True)}">
<button type="submit" id="login">Sign in</button></form></body></html>"""


def parse_form(body: bytes) -> dict[str, str]:
    """application/x-www-form-urlencoded, by hand: one small form does not need python-multipart."""
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", errors="replace")).items()}


def safe_next(value: str | None) -> str:
    """Only a path on this server (never another site) after signing in."""
    if not value or not value.startswith("/") or value.startswith("//"):
        return "/"
    return value


def without_key(path: str, query: dict[str, list[str]]) -> str:
    rest = {k: v for k, v in query.items() if k != "key"}
    return path + ("?" + urlencode(rest, doseq=True) if rest else "")
