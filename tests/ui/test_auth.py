"""--api-key protects every page, file and endpoint (every route the app has, enumerated), and
the browser signs in through the login page or a ?key= link."""
from __future__ import annotations

import re

import httpx
import pytest

KEY = "s3cret-key"


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_every_route_needs_the_key(make_ui, tmp_path):
    ui = make_ui(tmp_path / "runs", api_key=KEY)
    routes = [(m, _concrete(r.path)) for r in ui.app.routes for m in sorted(getattr(r, "methods", None) or {"GET"})
              if m != "HEAD"]
    assert len(routes) >= 20 and ("POST", "/api/runs/start") in routes and ("GET", "/") in routes
    routes += [("GET", "/static/app.js"), ("GET", "/no/such/page"), ("GET", "/api/no-such-endpoint")]
    hdr = {"X-Ragtune-UI": "1"}
    with httpx.Client(base_url=ui.url, timeout=30, follow_redirects=False) as c:
        for method, path in routes:
            if path == "/login":
                continue
            r = c.request(method, path, headers=hdr, json={})
            if path.startswith("/api/"):
                assert r.status_code == 401, (method, path, r.status_code)
                assert "API key" in r.json()["error"]
            else:
                assert r.status_code == 303 and r.headers["location"].startswith("/login"), (method, path, r.status_code)
            # a wrong key is no key
            bad = c.request(method, path, headers={**hdr, "Authorization": "Bearer wrong"}, json={})
            assert bad.status_code in (401, 303), (method, path)
        # with the key: through (whatever the endpoint then says about the empty body)
        auth = {**hdr, "Authorization": f"Bearer {KEY}"}
        for method, path in routes:
            r = c.request(method, path, headers=auth, json={})
            assert r.status_code not in (401, 303) or path in ("/login", "/no/such/page"), (method, path, r.status_code)
            assert r.status_code < 500, (method, path, r.status_code, r.text[:300])
        assert c.get("/api/runs", headers=auth).json() == {"runs": []}
        assert c.get("/static/app.js", headers=auth).text.startswith("// ragtune ui")
        # the login page is the one open page, and it shows nothing of the runs
        login = c.get("/login")
        assert login.status_code == 200 and str(ui.root) not in login.text
        # sign in by form: a cookie derived from the key (not the key itself) opens everything
        wrong = c.post("/login", data={"key": "nope", "next": "/"})
        assert wrong.status_code == 401 and "wrong API key" in wrong.text
        ok = c.post("/login", data={"key": KEY, "next": "/#/runs"})
        assert ok.status_code == 303 and ok.headers["location"] == "/#/runs"
        cookie = ok.cookies.get("ragtune_ui")
        assert cookie and KEY not in cookie
        with httpx.Client(base_url=ui.url, timeout=30, cookies={"ragtune_ui": cookie}) as browser_like:
            assert browser_like.get("/api/info").status_code == 200
        # sign-in never redirects to another site
        assert c.post("/login", data={"key": KEY, "next": "//evil.example/"}).headers["location"] == "/"


def test_state_changing_requests_need_the_ui_header(make_ui, tmp_path):
    """Without a key the UI is local only; another web page in the browser cannot post to it."""
    ui = make_ui(tmp_path / "runs")
    with httpx.Client(base_url=ui.url, timeout=30) as c:
        r = c.post("/api/runs/check", json={"yaml": "run_dir: x"})
        assert r.status_code == 403 and "x-ragtune-ui" in r.json()["error"]
        assert c.post("/api/runs/check", json={"yaml": "run_dir: x"}, headers={"X-Ragtune-UI": "1"}).status_code == 200
        rebinding = c.get("/api/info", headers={"Host": "attacker.example:80"})
        assert rebinding.status_code == 403


@pytest.mark.parametrize("via", ["form", "link"])
def test_browser_signs_in(page, make_ui, tmp_path, via):
    ui = make_ui(tmp_path / "runs", api_key=KEY)
    if via == "form":
        page.goto(ui.url + "/")
        page.wait_for_selector("#key")
        assert "/login" in page.url
        page.fill("#key", "wrong")
        page.click("#login")
        page.wait_for_selector("text=wrong API key")
        page.fill("#key", KEY)
        page.click("#login")
    else:
        page.goto(ui.url + "/?key=" + KEY)
    page.wait_for_function(f"document.querySelector('#runs-dir')?.textContent.includes({str(ui.root)!r})")
    assert "key=" not in page.url and "/login" not in page.url
    page.wait_for_selector("text=No runs yet")


def test_cli_starts_the_ui_on_loopback_with_the_key(tmp_path):
    """`ragtune ui --runs DIR --port 0 --api-key K`: the real command, bound to 127.0.0.1."""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "ragtune.cli", "ui", "--runs", str(tmp_path / "runs"), "--port", "0",
                             "--api-key", KEY], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            # Ctrl-C as in a terminal, even when this suite runs as a background job
                            # (which inherits SIGINT ignored)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        seen = []
        for _ in range(30):
            line = proc.stdout.readline()
            seen.append(line)
            found = re.search(r"(http://127\.0\.0\.1:\d+)/\?key=<your key>", line)
            if found or not line:
                break
        assert found, "".join(seen)
        url = found.group(1)
        assert httpx.get(url + "/api/runs", timeout=30).status_code == 401
        r = httpx.get(url + "/api/runs", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        assert r.json() == {"runs": []} and (tmp_path / "runs").is_dir()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=120) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
