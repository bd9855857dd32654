"""The FastAPI app of ``ragtune ui``: a JSON API over the runs directory plus a small front end
(``static/``: plain HTML, CSS and JavaScript, charts drawn as SVG by ``charts.js``; nothing is
fetched from the network and nothing is built at install time).

Every answer is computed from the files at request time; the only state in this process is the
cache of loaded models (Chat, Retrieval) and tokenizers (Data).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..core.errors import ConfigError, DataError, RagtuneError
from ..core.log import get_logger
from . import auth, forms, procs, runs
from .playground import (
    ChatRequest,
    Playground,
    RetrievalRequest,
    chat_events,
    check_local_model,
)
from .scan import classify, resolve_inside

log = get_logger(__name__)
STATIC = Path(__file__).parent / "static"


class NotFound(RagtuneError):
    """A run, file or route that does not exist (404)."""


def create_app(runs_dir: str | Path, *, api_key: str | None = None, host: str = "127.0.0.1") -> FastAPI:
    root = Path(runs_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    _load_registries()
    playground = Playground()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        playground.close()          # loaded models' batcher threads

    app = FastAPI(title="ragtune ui", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.root = root
    app.state.playground = playground

    # -- protection -------------------------------------------------------------------------------
    @app.middleware("http")
    async def guard(request: Request, call_next):
        if not auth.host_ok(request, host):
            return JSONResponse({"error": "this UI answers requests for 127.0.0.1/localhost only"}, status_code=403)
        path = request.url.path
        if api_key and path != "/login":
            query = parse_qs(request.url.query)
            given = query["key"][0] if query.get("key") else None
            if given is not None and request.method == "GET" and given == api_key:
                resp = RedirectResponse(auth.without_key(path, query), status_code=303)
                _set_cookie(resp, api_key)
                return resp
            if not auth.authorized(request, api_key):
                if path.startswith("/api/"):
                    return JSONResponse({"error": "invalid or missing API key: sign in, or send "
                                                  "'Authorization: Bearer <key>'"}, status_code=401)
                target = "/login?" + _qs({"next": path})
                return RedirectResponse(target, status_code=303)
        if request.method not in ("GET", "HEAD") and path != "/login" and not request.headers.get(auth.CSRF_HEADER):
            return JSONResponse({"error": f"state-changing requests need the {auth.CSRF_HEADER} header "
                                          "(sent by the UI's own pages)"}, status_code=403)
        return await call_next(request)

    @app.exception_handler(RagtuneError)
    async def _ragtune_error(request, exc: RagtuneError):
        status = 404 if isinstance(exc, NotFound) or (isinstance(exc, DataError) and "does not exist" in exc.message
                                                       and request.url.path.startswith("/api/runs")) else 400
        body: dict[str, Any] = {"error": exc.message, "hint": exc.hint}
        if isinstance(exc, ConfigError):
            body["error_keys"] = forms.error_keys(exc.message)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _crash(request, exc: Exception):
        log.exception("ui request %s failed", request.url.path)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    # -- sign in ---------------------------------------------------------------------------------------
    @app.get("/login")
    async def login_form(next: str = "/"):
        if not api_key:
            return RedirectResponse("/", status_code=303)
        return HTMLResponse(auth.login_page(auth.safe_next(next)))

    @app.post("/login")
    async def login(request: Request):
        if not api_key:
            return RedirectResponse("/", status_code=303)
        form = auth.parse_form(await request.body())
        nxt = auth.safe_next(form.get("next"))
        if form.get("key") != api_key:
            return HTMLResponse(auth.login_page(nxt, "wrong API key"), status_code=401)
        resp = RedirectResponse(nxt, status_code=303)
        _set_cookie(resp, api_key)
        return resp

    @app.post("/logout")
    async def logout():
        resp = JSONResponse({"ok": True})
        resp.delete_cookie(auth.COOKIE, path="/")
        return resp

    # -- the front end -----------------------------------------------------------------------------
    @app.get("/")
    async def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name}")
    async def static(name: str):
        path = (STATIC / name).resolve()
        if path.parent != STATIC.resolve() or not path.is_file():
            raise NotFound(f"no static file {name}")
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})

    # -- runs ------------------------------------------------------------------------------------------
    @app.get("/api/info")
    async def info():
        from .. import __version__
        from ..engine.base import ENGINES

        return {"runs_dir": str(root), "cwd": str(Path.cwd()), "version": __version__, "auth": bool(api_key),
                "engines": ENGINES.names()}

    @app.get("/api/runs")
    async def list_runs():
        return {"runs": await asyncio.to_thread(runs.list_runs, root)}

    @app.get("/api/runs/detail")
    async def run_detail(id: str, offset: int = 0, log: str | None = None, lines: int = 200):
        path, kind = _entry(root, id)
        return await asyncio.to_thread(runs.detail, root, path, kind, offset, log, min(max(lines, 1), 5000))

    @app.get("/api/runs/template")
    async def run_template(source: str | None = None, name: str | None = None):
        if source:
            path, _ = _entry(root, source)
            for fname in (procs.RUN_YAML, "config.yaml"):
                if (path / fname).is_file():
                    data = forms.parse_yaml((path / fname).read_text(encoding="utf-8"))
                    if name:
                        data["run_dir"] = str(root / name)
                    return {"yaml": forms.dump_yaml(data), "config": data}
            raise NotFound(f"{source} has no run.yaml or config.yaml")
        data = forms.template(root, name or "my-run")
        return {"yaml": forms.dump_yaml(data), "config": data}

    @app.post("/api/runs/check")
    async def run_check(request: Request):
        body = await _json(request)
        return await asyncio.to_thread(_check, root, body, bool(body.get("preflight", True)))

    @app.post("/api/runs/start")
    async def run_start(request: Request):
        body = await _json(request)
        if not isinstance(body.get("yaml"), str):
            raise ConfigError("yaml: the run's YAML text is required")
        result = await asyncio.to_thread(forms.check, root, yaml_text=body["yaml"])
        if not result["ok"]:
            return JSONResponse({**result, "error": result["error"]}, status_code=400)
        run_dir = root / result["name"]
        run_dir.mkdir(parents=True, exist_ok=True)
        yaml_path = run_dir / procs.RUN_YAML
        data = {**result["config"], "run_dir": str(run_dir)}
        from ..core.io import atomic_write_text

        current = procs.process_info(run_dir)
        if current and current["alive"]:
            raise ConfigError(f"{run_dir.name} is already running (pid {current['pid']}); stop it first")
        atomic_write_text(yaml_path, forms.dump_yaml(data))
        proc = procs.start(run_dir, yaml_path, Path.cwd())
        return {"id": result["name"], "process": proc, "cli": proc["cli"]}

    @app.post("/api/runs/stop")
    async def run_stop(request: Request):
        body = await _json(request)
        path, _ = _entry(root, str(body.get("id", "")))
        return {"process": procs.stop(path, force=bool(body.get("force")))}

    @app.post("/api/runs/resume")
    async def run_resume(request: Request):
        body = await _json(request)
        path, kind = _entry(root, str(body.get("id", "")))
        if kind != "run":
            raise ConfigError(f"{path.name} is a {kind} directory; only `ragtune run` directories can be resumed")
        yaml_path = path / procs.RUN_YAML if (path / procs.RUN_YAML).is_file() else path / "config.yaml"
        if not yaml_path.is_file():
            raise ConfigError(f"{path.name} has neither run.yaml nor config.yaml to resume from")
        cwd = Path((procs.process_info(path) or {}).get("cwd") or Path.cwd())
        proc = procs.start(path, yaml_path, cwd)
        return {"id": _rel(root, path), "process": proc, "cli": proc["cli"]}

    @app.get("/api/file")
    async def file(id: str, name: str):
        base, _ = _entry(root, id)
        path = (base / name).resolve()
        if base not in path.parents or not path.is_file():
            raise NotFound(f"{id}/{name} is not a file of this run")
        media = mimetypes.guess_type(path.name)[0] or "text/plain"
        if media.startswith("text/") and media != "text/html":
            media = "text/plain; charset=utf-8"
        return FileResponse(path, media_type=media)

    # -- compare, data, models -------------------------------------------------------------------------
    @app.get("/api/evals")
    async def evals():
        return {"evals": await asyncio.to_thread(runs.list_kind, root, "eval")}

    @app.post("/api/compare")
    async def compare_runs(request: Request):
        from .compare import compare

        body = await _json(request)
        ids = body.get("runs")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ConfigError("runs: a list of eval run ids")
        paths = []
        for i in ids:
            path, kind = _entry(root, i)
            if kind != "eval":
                raise ConfigError(f"runs: {i} is not an eval run (no summary.json + items.json)")
            paths.append(path)
        spread = body.get("spread", 0.3)
        if not isinstance(spread, (int, float)) or not 0 <= spread <= 1:
            raise ConfigError("spread: a number between 0 and 1")
        return await asyncio.to_thread(compare, paths, float(spread))

    @app.get("/api/models")
    async def models():
        return await asyncio.to_thread(runs.models, root)

    @app.post("/api/data/preview")
    async def data_preview(request: Request):
        from .data_view import preview

        body = await _json(request)
        allowed = {"path", "cutoff_len", "tokenizer", "offset", "limit", "only_issues"}
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise ConfigError(f"unknown field(s) {unknown}; valid: {', '.join(sorted(allowed))}")
        if not isinstance(body.get("path"), str) or not body["path"].strip():
            raise ConfigError("path: the data file to preview")
        cutoff = body.get("cutoff_len")
        if cutoff is not None and (not isinstance(cutoff, int) or cutoff < 1):
            raise ConfigError(f"cutoff_len: a positive whole number of tokens, got {cutoff!r}")
        return await asyncio.to_thread(preview, body["path"].strip(), cutoff_len=cutoff,
                                       tokenizer=body.get("tokenizer") or None, offset=int(body.get("offset", 0)),
                                       limit=int(body.get("limit", 50)), only_issues=bool(body.get("only_issues")))

    @app.get("/api/retrieval/questions")
    async def retrieval_questions(evalset: str, limit: int = 500):
        from ..data.embed_sets import load_eval

        items = await asyncio.to_thread(load_eval, evalset)
        return {"questions": [{"query": it.query, "corpus": it.corpus} for it in items[:max(1, limit)]],
                "total": len(items)}

    @app.post("/api/retrieval")
    async def retrieval(request: Request):
        req = RetrievalRequest.build("retrieval request", **await _json(request))
        return await asyncio.to_thread(playground.compare_retrieval, req)

    @app.post("/api/chat/stream")
    async def chat_stream(request: Request):
        req = ChatRequest.build("chat request", **await _json(request))
        if req.target.kind == "local":
            await asyncio.to_thread(check_local_model, req.target.model)
        elif not req.target.url:
            raise ConfigError("target.url: the OpenAI-compatible base URL of the remote model (…/v1)")
        if req.rag is not None and not Path(req.rag.kb).expanduser().exists():
            raise DataError("knowledge base does not exist", file=req.rag.kb)
        return StreamingResponse(chat_events(playground, req), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app


# -- helpers ------------------------------------------------------------------------------------------
def _load_registries() -> None:
    """Fill the registries (methods, engines, metrics, stores) now, in one thread: requests run in
    worker threads, and ``Registry`` loads its built-in entries lazily without a lock, so two
    first look-ups at once could see a half-filled registry ("unknown fine-tune method 'lora'")."""
    from ..engine.base import ENGINES
    from ..eval.base import METRICS
    from ..finetune.base import METHODS
    from ..rag.store import STORES

    for registry in (METHODS, ENGINES, METRICS, STORES):
        registry.names()


def _set_cookie(resp: Response, api_key: str) -> None:
    resp.set_cookie(auth.COOKIE, auth.token(api_key), httponly=True, samesite="strict", path="/")


def _qs(values: dict[str, str]) -> str:
    from urllib.parse import urlencode

    return urlencode(values)


def _rel(root: Path, path: Path) -> str:
    return str(path.relative_to(root)) if path != root else "."


def _entry(root: Path, rel_id: str) -> tuple[Path, str]:
    try:
        path = resolve_inside(root, rel_id)
    except DataError:
        raise NotFound(f"no run '{rel_id}' in {root}") from None
    kind = classify(path)
    if kind is None:
        raise NotFound(f"'{rel_id}' is not a run, fine-tune, eval or model directory")
    return path, kind


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ConfigError(f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def _check(root: Path, body: dict[str, Any], preflight: bool) -> dict[str, Any]:
    if isinstance(body.get("yaml"), str):
        return forms.check(root, yaml_text=body["yaml"], preflight=preflight)
    if isinstance(body.get("config"), dict):
        return forms.check(root, config=body["config"], preflight=preflight)
    raise ConfigError("send yaml (text) or config (an object)")

