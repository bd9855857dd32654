"""Shared serve/infer fixtures (imported by tests/serve and tests/infer conftest.py): a tiny model whose greedy output is readable text, an engine, a real server."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest


def make_readable_llm(src: Path, dst: Path) -> Path:
    """Copy of the tiny random LLM whose (tied) embedding rows are zero for every token that is not
    plain lower-case ASCII text, so greedy decoding emits readable words (stop-string tests need
    to know what text comes out) and never EOS (EOS is tested by declaring another token EOS)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    emb = model.get_input_embeddings().weight
    keep = torch.zeros(emb.shape[0], dtype=torch.bool)
    for tid in range(len(tok)):
        text = tok.decode([tid])
        keep[tid] = bool(re.fullmatch(r" ?[a-z]{2,}", text))
    with torch.no_grad():
        emb[~keep] = 0
    model.save_pretrained(dst)
    tok.save_pretrained(dst)
    return dst


@pytest.fixture(scope="session")
def readable_llm_dir(tiny_llm_dir, tmp_path_factory) -> Path:
    return make_readable_llm(tiny_llm_dir, tmp_path_factory.mktemp("models") / "readable-llm")


@pytest.fixture(scope="session")
def llm_engine(readable_llm_dir):
    from ragtune.engine.builtin import BuiltinEngine

    # fp32 so batched (left-padded) and single-request results can be compared exactly
    engine = BuiltinEngine.load(str(readable_llm_dir), dtype="fp32", device="cpu", max_batch_size=8,
                                batch_wait_ms=50)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def llm_server(llm_engine):
    from ragtune.serve.app import create_app
    from ragtune.serve.server import ServerThread

    srv = ServerThread(create_app(llm_engine, default_max_tokens=16), port=0).start()
    yield srv
    srv.stop()


@pytest.fixture()
def http(llm_server):
    import httpx

    with httpx.Client(base_url=llm_server.url, timeout=60) as client:
        yield client


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
