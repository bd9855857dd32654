"""A real OpenAI-compatible HTTP judge (FastAPI + uvicorn on 127.0.0.1, random port) that answers
from a script: the test sets ``server.script`` (a list of reply strings, consumed in order) and
reads ``server.requests`` (every request body and Authorization header)."""

import socket
import threading
import time
from contextlib import contextmanager


class ScriptedJudgeServer:
    def __init__(self):
        self.script: list[str] = []
        self.requests: list[dict] = []
        self.fail_status: int | None = None

    def app(self):
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse

        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            self.requests.append({"body": body, "auth": request.headers.get("authorization")})
            if self.fail_status:
                return JSONResponse({"error": "boom"}, status_code=self.fail_status)
            content = self.script.pop(0) if self.script else "no more scripted answers"
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
