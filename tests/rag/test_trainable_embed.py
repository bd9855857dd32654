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
