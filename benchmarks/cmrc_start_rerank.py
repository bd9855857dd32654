"""Where does a CMRC answer start? Most of a tuned gemma-3-270m's misses are answers that start too
late (inside the reference, or its tail: BENCHMARKS.md, issue 14). This probe asks whether the model
itself knows better when asked about whole spans: for each of the top-k first tokens, decode the rest
greedily, then keep the candidate that a scoring rule ranks first, under the model's own
log-probabilities of the answer tokens and of the end token. Greedy is the k=1 case.

    python benchmarks/cmrc_start_rerank.py --config benchmarks/cmrc/main.yaml [--k 4] [--dev-items 200] [--test]

Rules: ``mean`` (mean log-prob per token, the end token included), ``sum`` (the span's total
log-prob), ``first+end`` (log-prob of the start token plus of the end token: where the span begins
and ends, not what lies between). Dev is the run's held-out train records (never trained on); the
(rule, k) with the best dev exact is the one to read on test (``--test``: the run's seeded test
items). The oracle (some candidate is exact) is the ceiling of any reranker over these candidates.
The candidates go to $TMPDIR/cmrc_start_rerank_candidates.json (they hold the data set's text:
not for the repo).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from cmrc_eos_bias import run_items, scores  # the run's dev/test items and metrics, one reader


def answer_logprobs(engine, prompt: list[int], answer: list[int]) -> tuple[list[float], float]:
    """(log p of each answer token, log p of an end token after them) | prompt: one forward."""
    import torch

    seq = torch.tensor([[*prompt, *answer]], device=engine.device)
    with torch.inference_mode():
        logits = engine.model(input_ids=seq, logits_to_keep=len(answer) + 1).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    tokens = logp[:-1].gather(1, torch.tensor(answer, device=logp.device)[:, None])[:, 0]
    return tokens.tolist(), float(torch.logsumexp(logp[-1, sorted(engine.eos_ids)], dim=0))


RULES = {
    "mean": lambda c: (sum(c["token_logprobs"]) + c["end_logprob"]) / (len(c["token_logprobs"]) + 1),
    "sum": lambda c: sum(c["token_logprobs"]) + c["end_logprob"],
    "first+end": lambda c: c["token_logprobs"][0] + c["end_logprob"],
}


def candidates(engine, items, k: int, max_tokens: int) -> list[list[dict]]:
    """Per item, for each of the top-k starts (greedy's first): its answer text and log-probs."""
    from dataclasses import replace

    from ragtune.engine.base import SamplingParams

    prompts = [engine.encode_chat(it.prompt) for it in items]
    params = engine.chat_params(SamplingParams(max_tokens=max_tokens))
    greedy = engine.generate_ids(prompts, replace(params, logprobs=k))
    alt_prompts, where = [], []
    for i, (p, g) in enumerate(zip(prompts, greedy)):
        first = [t.token_id for t in g.logprobs[0].top] if g.logprobs else []
        for t in [t for t in first if t not in engine.eos_ids][:k]:
            if not (g.token_ids and t == g.token_ids[0]):
                alt_prompts.append(p + [t])
                where.append((i, t))
    rest = engine.generate_ids(alt_prompts, replace(params, max_tokens=max_tokens - 1)) if alt_prompts else []
    answers: list[list[list[int]]] = [[g.token_ids] if g.token_ids else [] for g in greedy]
    for (i, t), c in zip(where, rest):
        answers[i].append([t, *c.token_ids])
    out = []
    for p, options in zip(prompts, answers):
        found = []
        for ids in options:
            tokens, end = answer_logprobs(engine, p, ids)
            found.append({"text": engine.tokenizer.decode(ids, skip_special_tokens=True).strip(),
                          "token_logprobs": tokens, "end_logprob": end})
        out.append(found)
    return out


def pick(options: list[dict], k: int, rule: str) -> str:
    """The rerank over the first k candidates (options[0] is greedy's); "" when there are none."""
    return max(options[:k], key=RULES[rule])["text"] if options else ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--dev-items", type=int, default=200)
    ap.add_argument("--test", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cmrc_start_rerank.md"))
    args = ap.parse_args()
    import torch

    from ragtune.engine.builtin import BuiltinEngine

    torch.set_num_threads(args.threads)
    ft, model, dev_items, test_items = run_items(args.config)
    engine = BuiltinEngine.load(model)
    sets = {"dev": dev_items[: args.dev_items]}
    if args.test:
        sets["test"] = test_items
    load_before = os.getloadavg()
    lines = ["# CMRC2018: rerank the answer's start by the model's own span log-probability", "",
             f"Command: `python benchmarks/cmrc_start_rerank.py {' '.join(sys.argv[1:])}`  ",
             f"Date: {datetime.date.today()}; load average {load_before[0]:.1f} before (2-core CPU). Model: {model}. "
             f"Candidates: the top-{args.k} first tokens, each continued greedily (max_tokens "
             f"{ft.dev_max_tokens}); kept: the best under each rule (see the script). "
             "Metrics in %.", "",
             "| items | rule | candidates (k) | exact | CMRC EM | CMRC F1 | oracle exact | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    results: dict[str, dict] = {}
    kept: dict[str, list] = {}
    for name, items in sets.items():
        start = time.perf_counter()
        options = candidates(engine, items, args.k, ft.dev_max_tokens)
        seconds = time.perf_counter() - start
        kept[name] = [{"answers": it.answers, "candidates": o} for it, o in zip(items, options)]
        for rule in RULES:
            for k in range(1, args.k + 1):
                if k == 1 and rule != "mean":
                    continue   # k=1 is greedy under every rule
                r = scores(items, [pick(o, k, rule) for o in options])
                oracle = sum(any(c["text"] in it.answers for c in o[:k]) for o, it in zip(options, items)) / len(items)
                results[f"{name} {rule} k{k}"] = {**r, "oracle": oracle}
                label = "greedy" if k == 1 else rule
                lines.append(f"| {name} ({len(items)}) | {label} | {k} | {100 * r['exact']:.2f} | "
                             f"{100 * r['cmrc_em']:.2f} | {100 * r['cmrc_f1']:.2f} | {100 * oracle:.2f} | {seconds:.0f} |")
                print(name, rule, k, results[f"{name} {rule} k{k}"], file=sys.stderr, flush=True)
    best = max((key for key in results if key.startswith("dev ")), key=lambda key: results[key]["exact"])
    lines += ["", f"Best on dev by exact: {best[4:]} (the one to read on test)."]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    Path(args.out).with_suffix(".json").write_text(json.dumps({"results": results, "best_on_dev": best}, indent=2),
                                                  encoding="utf-8")
    # the candidates hold CMRC's passages' text and answers: outside the repo (data sets stay out of it)
    candidates_file = Path(tempfile.gettempdir()) / "cmrc_start_rerank_candidates.json"
    candidates_file.write_text(json.dumps(kept, ensure_ascii=False), encoding="utf-8")
    print(f"candidates: {candidates_file}", file=sys.stderr)
    print(Path(args.out).read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
