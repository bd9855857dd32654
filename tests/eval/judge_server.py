"""A real OpenAI-compatible HTTP judge (FastAPI + uvicorn on 127.0.0.1, random port) that answers
from a script: the test sets ``server.script`` (a list of reply strings, consumed in order) and
reads ``server.requests`` (every request body and Authorization header). ``server.delays`` (seconds,
consumed one per chat request, before answering) makes calls slow, to time them out;
``GET /v1/models`` lists ``server.models``; with ``server.strict_model`` any other model is a 404, as
``ragtune serve`` answers."""

import asyncio
import socket
import threading
import time
from contextlib import contextmanager


class ScriptedJudgeServer:
    def __init__(self):
        self.script: list[str] = []
        self.requests: list[dict] = []
        self.fail_status: int | None = None
        self.delays: list[float] = []
        self.models: list[str] = ["scripted-judge"]
        self.strict_model = False
        self.fail_from: int | None = None   # chat requests from this one on get fail_status

    def app(self):
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse

        app = FastAPI()

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            self.requests.append({"body": body, "auth": request.headers.get("authorization")})
            content = self.script.pop(0) if self.script else "no more scripted answers"
            if self.delays:   # the answer was taken already: a timed-out call consumes its scripted answer
                await asyncio.sleep(self.delays.pop(0))
            if self.fail_status and (self.fail_from is None or len(self.requests) > self.fail_from):
                return JSONResponse({"error": "boom"}, status_code=self.fail_status)
            if self.strict_model and body.get("model") not in self.models:
                return JSONResponse({"error": {"message": f"model {body.get('model')!r} does not exist",
                                               "code": "model_not_found"}}, status_code=404)
            return {"id": "x", "object": "chat.completion", "model": body.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}]}

        return app


@contextmanager
def running_judge():
    import uvicorn

    judge = ScriptedJudgeServer()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(judge.app(), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("judge server did not start")
        time.sleep(0.02)
    try:
        judge.base_url = f"http://127.0.0.1:{port}/v1"
        yield judge
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
