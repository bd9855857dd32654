"""Shared fixtures: tiny models built once per test session, an isolated RAGTUNE_HOME."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")          # tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiny_models import make_tiny_embedder, make_tiny_llm

# A ChatML-like template, for tests of the "model has its own chat template" path.
CHATML_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<eos>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory) -> Path:
    """Tiny random Gemma-3 causal LM with no chat template (like the bundled base gemma)."""
    return make_tiny_llm(tmp_path_factory.mktemp("models") / "tiny-llm")


@pytest.fixture(scope="session")
def tiny_chat_llm_dir(tmp_path_factory) -> Path:
    """Same tiny LM, but its tokenizer carries a chat template."""
    return make_tiny_llm(tmp_path_factory.mktemp("models") / "tiny-chat-llm", chat_template=CHATML_TEMPLATE)


@pytest.fixture(scope="session")
def tiny_embedder_dir(tmp_path_factory) -> Path:
    """Tiny random BERT sentence-transformers model (mean pooling, normalized)."""
    return make_tiny_embedder(tmp_path_factory.mktemp("models") / "tiny-embedder")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Each test gets its own RAGTUNE_HOME unless it is a slow test using the real cache."""
    if "RAGTUNE_TEST_REAL_HOME" not in os.environ:
        monkeypatch.setenv("RAGTUNE_HOME", str(tmp_path / "ragtune_home"))
    yield


def pytest_collection_modifyitems(config, items):
    if os.environ.get("RAGTUNE_SLOW") == "1" or config.getoption("-m"):
        return
    skip = pytest.mark.skip(reason="slow: set RAGTUNE_SLOW=1 (or -m slow) to run with the real bundled models")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
