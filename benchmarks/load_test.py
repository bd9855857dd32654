"""Bounded load test on loopback: N chat requests, C concurrent, against `ragtune serve`.

Starts `ragtune serve --model M` as a subprocess on a free 127.0.0.1 port (or uses --url), sends
the requests with C client threads, and reports failures, p50/p95/max latency, throughput and the
server's batch-size histogram (from /metrics).

    python benchmarks/load_test.py --model gemma-3-270m --requests 200 --concurrency 8 --max-tokens 16
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

import httpx

QUESTIONS = ["What is the capital of France?", "Name a primary color.", "How many days are in a week?",
             "What does a pump do?", "Translate 'hello' to Spanish.", "What is 12 plus 30?",
             "Who wrote Hamlet?", "What is water made of?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ragtune.cli", "serve", "--model", model, "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("server exited:\n" + proc.stdout.read())
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not become healthy in 300s")


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[k]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--url", default=None, help="an already running server (base URL without /v1)")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--server-arg", action="append", default=[], help="extra `ragtune serve` flag (repeatable)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    proc = None
    if args.url is None:
        port = free_port()
        proc = start_server(args.model, port, args.server_arg)
        url = f"http://127.0.0.1:{port}"
    else:
        url = args.url.rstrip("/")
    latencies: list[float] = []
    failures: list[str] = []
    tokens = [0]
    lock = threading.Lock()
    next_i = [0]

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=300) as client:
            while True:
                with lock:
                    i = next_i[0]
                    next_i[0] += 1
                if i >= args.requests:
                    return
                body = {"messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                        "max_tokens": args.max_tokens}
                t0 = time.perf_counter()
                try:
                    r = client.post("/v1/chat/completions", json=body)
                    ok = r.status_code == 200
                    n = r.json()["usage"]["completion_tokens"] if ok else 0
                except Exception as exc:  # counted, reported
                    ok, n, r = False, 0, exc
                dt = time.perf_counter() - t0
                with lock:
                    if ok:
                        latencies.append(dt)
                        tokens[0] += n
                    else:
                        failures.append(str(getattr(r, "text", r))[:200])

    try:
        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        metrics = httpx.get(url + "/metrics").json()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    hist = metrics["engine"].get("batch_size_histogram")
    print(f"requests {args.requests}, concurrency {args.concurrency}, failures {len(failures)}")
    print(f"latency p50 {p50:.2f}s p95 {p95:.2f}s max {max(latencies):.2f}s mean {statistics.mean(latencies):.2f}s")
    print(f"throughput {len(latencies)/wall:.2f} req/s, {tokens[0]/wall:.1f} completion tok/s over {wall:.1f}s")
    print(f"server batch-size histogram {hist}")
    for f in failures[:5]:
        print("failure:", f)
    row = (f"| {args.model} | {args.requests} req, {args.concurrency} concurrent, max_tokens {args.max_tokens} "
           f"| {len(failures)} | {p50:.2f} / {p95:.2f} | {len(latencies)/wall:.2f} req/s, {tokens[0]/wall:.1f} tok/s "
           f"| {hist} | {os.getloadavg()[0]:.1f} |")
    print(row)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.write(row + "\n")
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
