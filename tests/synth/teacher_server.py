"""A real OpenAI-compatible teacher over HTTP on 127.0.0.1 (FastAPI + uvicorn, random port) for the
synth/label tests. It reads the passage out of ragtune's own prompt and answers deterministically,
partly badly, to exercise every filter:

- a sentence "The <attr> of <subject> is <value>." (or "<subject>的<attr>是<value>。") becomes the
  question "What is the <attr> of <subject>?" ("<subject>的<attr>是什么？") with answer <value>;
- markers in the passage select bad behaviour: GARBAGE (never JSON), FLAKY (not JSON at
  temperature 0, JSON when re-asked with sampling), OUTSIDE (an answer not in the passage), LEAK
  (a question containing its answer), DUPLICATE (the same question twice, reworded by one
  character), BROKEN (HTTP 500 on every attempt).
- label prompts ("Question: ...") are answered with the value of the matching sentence.

``server.requests`` records every request body; ``server.delay`` slows each answer (kill tests);
``server.tokenizer`` (optional) makes logprobs requests return that tokenizer's ids for the answer.
"""


import asyncio
import json
import re
import socket
import threading
import time
from contextlib import contextmanager

EN = re.compile(r"The ([\w ]+?) of ([\w\- ]+?) is ([^.]+)\.")
ZH = re.compile(r"([^。，；\s]+?)的([^。，；\s]+?)是([^。，；\s]+?)。")


def facts(passage: str) -> list[tuple[str, str]]:
    out = [(f"What is the {a} of {s}?", v) for a, s, v in EN.findall(passage)]
    out += [(f"{s}的{a}是什么？", v) for s, a, v in ZH.findall(passage)]
    return out


class ScriptedTeacher:
    def __init__(self):
        self.requests: list[dict] = []
        self.delay = 0.0
        self.tokenizer = None
        self.heal = False          # True: BROKEN passages are answered (the outage is over)
        self.lock = threading.Lock()

    def answer_synth(self, passage: str, body: dict) -> str:
        sampled = (body.get("temperature") or 0) > 0
        if "GARBAGE" in passage or ("FLAKY" in passage and not sampled):
            return "Sure! Here are some great questions about the passage (no JSON, sorry)."
        qa = [{"question": q, "answer": a} for q, a in facts(passage)]
        if "OUTSIDE" in passage and qa:
            qa[0]["answer"] = "a value that is nowhere in the passage"
        if "LEAK" in passage and qa:
            qa[0]["question"] = f"Is the answer {qa[0]['answer']}?"
        if "DUPLICATE" in passage and qa:
            qa.append({"question": qa[0]["question"].replace("?", " ?"), "answer": qa[0]["answer"]})
        return "```json\n" + json.dumps({"qa": qa}, ensure_ascii=False) + "\n```"

    def answer_label(self, prompt: str) -> str:
        m = re.search(r"(?:Question|问题)[:：]\s*(.+?)\n", prompt)
        question = m.group(1).strip() if m else ""
        ctx = prompt.split("Question")[0]
        for q, a in facts(ctx):
            if q == question:
                return a
        return "I do not know."

    def app(self):
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse

        app = FastAPI()

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": "scripted-teacher", "object": "model"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            with self.lock:
                self.requests.append(body)
            if self.delay:
                await asyncio.sleep(self.delay)
            prompt = body["messages"][-1]["content"]
            passage = prompt.split("Passage:\n")[-1].split("段落：\n")[-1]
            if "BROKEN" in passage and not self.heal:
                return JSONResponse({"error": {"message": "teacher overloaded"}}, status_code=500)
            is_label = "Question:" in prompt or "问题：" in prompt
            content = self.answer_label(prompt) if is_label else self.answer_synth(passage, body)
            choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
            if body.get("logprobs") and self.tokenizer is not None:
                ids = self.tokenizer(content, add_special_tokens=False)["input_ids"]
                k = body.get("top_logprobs") or 0
                choice["logprobs"] = {"content": [
                    {"token": f"token_id:{t}", "logprob": -0.1,
                     "top_logprobs": [{"token": f"token_id:{t}", "logprob": -0.1}] +
                                     [{"token": f"token_id:{(t + j) % len(self.tokenizer)}", "logprob": -3.0 - j}
                                      for j in range(1, k)]} for t in ids]}
            return {"id": "x", "object": "chat.completion", "model": body.get("model"), "choices": [choice]}

        return app


@contextmanager
def running_teacher():
    import uvicorn

    teacher = ScriptedTeacher()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(teacher.app(), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("teacher server did not start")
        time.sleep(0.02)
    try:
        teacher.base_url = f"http://127.0.0.1:{port}/v1"
        yield teacher
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def serve_forever(port_file: str, delay: float) -> None:
    """Entry point for a teacher in its own process (the kill/resume test kills the synth process)."""
    import uvicorn

    teacher = ScriptedTeacher()
    teacher.delay = delay
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    with open(port_file, "w") as fh:
        fh.write(str(sock.getsockname()[1]))
    uvicorn.Server(uvicorn.Config(teacher.app(), log_level="warning")).run(sockets=[sock])
