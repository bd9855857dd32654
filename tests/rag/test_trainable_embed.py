"""The chapter's embed flow: TrainableModule(embed).mode('finetune') -> Document -> retriever.update()."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import ragtune as rt

from ..finetune_embed.synth import make_task  # noqa: E402


def test_retriever_update_finetunes_trainable_embed_then_reembeds(tmp_path, tiny_embedder_dir):
    train, evalf = make_task(tmp_path, n_train=32, n_eval=8)
    kb = tmp_path / "KB"
    kb.mkdir()
    (kb / "knowledge_base.txt").write_text(
        "\n".join(json.loads(line)["corpus"][0] for line in evalf.read_text().splitlines()))
    target = tmp_path / "tuned"
    embed = (rt.TrainableModule(str(tiny_embedder_dir), target_path=str(target))
             .mode("finetune").trainset(str(train))
             .finetune_method((rt.finetune.embedding, {"num_train_epochs": 1, "per_device_train_batch_size": 8,
                                                       "dtype": "fp32", "eval_file": str(evalf)})))
    docs = rt.Document(kb, embed=embed, manager=False)
    docs.create_node_group(name="split_sent", transform=lambda s: s.split("\n"))
    retriever = rt.Retriever(doc=docs, group_name="split_sent", similarity="cosine", topk=1)
    before = retriever("pump valve")[0].score                  # base model (target not trained yet)
    retriever.update()                                         # fine-tunes, then re-embeds every node
    assert (target / "modules.json").exists() and (target / "metrics.json").exists()
    assert retriever.embedded_last_sync == 8
    assert docs.embedder.path == target.resolve()
    after = retriever("pump valve")[0].score
    assert after != before


def test_trainable_module_embed_and_retriever_give_the_same_query_vector(tmp_path, tiny_embedder_dir):
    """A tuned embedder saves a query instruction; TrainableModule.embed(q) applies it exactly as the
    Retriever does (one Embedder), and embed_documents() does not."""
    import numpy as np

    train, evalf = make_task(tmp_path, n_train=24, n_eval=4)
    target = tmp_path / "tuned"
    module = (rt.TrainableModule(str(tiny_embedder_dir), target_path=str(target))
              .mode("finetune").trainset(str(train))
              .finetune_method(rt.finetune.embedding, num_train_epochs=1, per_device_train_batch_size=8,
                               dtype="fp32", eval_file=str(evalf), query_instruction="find: "))
    module.update()
    kb = tmp_path / "KB"
    kb.mkdir()
    (kb / "kb.txt").write_text("the pump valve opens\nthe filter is blue\n")
    docs = rt.Document(kb, embed=module, manager=False)
    docs.create_node_group(name="lines", transform=lambda s: s.split("\n"))
    retriever = rt.Retriever(doc=docs, group_name="lines", similarity="cosine", topk=1)
    retriever("pump")                                               # syncs the index
    q = "pump valve"
    from_module = np.asarray(module.embed(q))
    from_retriever = docs.embedder.embed_queries([q])[0]
    assert np.allclose(from_module, from_retriever, atol=1e-6)
    from sentence_transformers import SentenceTransformer

    raw = SentenceTransformer(str(target), device="cpu")
    with_instruction = raw.encode(["find: " + q], normalize_embeddings=True)[0]
    assert np.allclose(from_module, with_instruction, atol=1e-5)    # the instruction was applied
    as_document = np.asarray(module.embed_documents([q])[0])
    assert not np.allclose(as_document, from_module, atol=1e-4)     # ... to queries only
    # the Retriever's score is the dot product of exactly that query vector with the node's vector
    node = retriever.retrieve(q)[0]
    node_vec = docs.embedder.embed_documents([node.text])[0]
    assert abs(float(from_module @ node_vec) - node.score) < 1e-5
