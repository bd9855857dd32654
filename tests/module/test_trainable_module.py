"""The chapter's TrainableModule example, with ragtune names, on tiny models."""
import json

import pytest

import ragtune as rt
from ragtune.core.errors import ConfigError
from ragtune.data.manuals import generate_manuals, split_by_passage
from ragtune.workflow.module import UsageError


@pytest.fixture(scope="module")
def manual_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("manuals")
    train, test = split_by_passage(generate_manuals(12, 4, seed=3), 0.25, seed=3)
    (d / "train_squad.json").write_text(json.dumps(train))
    (d / "test_squad.json").write_text(json.dumps(test))
    rt.data.squad_to_alpaca(d / "train_squad.json", d / "train.json")
    rt.data.evalset(d / "test_squad.json", d / "eval.json")
    return d


def test_chapter_example_finetune_deploy_infer(tiny_llm_dir, manual_data, tmp_path):
    eval_items = json.loads((manual_data / "eval.json").read_text())
    model = (rt.TrainableModule(str(tiny_llm_dir), tmp_path / "sft")
             .mode("finetune")
             .trainset(str(manual_data / "train.json"))
             .finetune_method((rt.finetune.lora, {
                 "learning_rate": 1e-3, "cutoff_len": 1000, "max_samples": 16, "val_size": 0.0,
                 "per_device_train_batch_size": 2, "num_train_epochs": 1.0}))
             .prompt(dict(system="You are a helpful assistant.", drop_builtin_system=True))
             .deploy_method(rt.deploy.builtin))
    model.evalset(eval_items, max_tokens=8)
    model.update()
    try:
        assert (tmp_path / "sft" / "adapter" / "adapter_config.json").exists()
        metrics = model.finetune_result.metrics
        assert metrics, "fine-tune wrote no metrics"
        assert isinstance(model.eval_result, list) and len(model.eval_result) == len(eval_items)
        assert all(isinstance(p, str) for p in model.eval_result)
        # the deployed module answers like a function, through the same prompt builder
        assert isinstance(model("What is the warranty?", max_tokens=4), str)
    finally:
        model.stop()


def test_serving_an_existing_finetune_output(tiny_llm_dir, manual_data, tmp_path):
    out = tmp_path / "sft"
    rt.finetune.lora.run(str(tiny_llm_dir), str(manual_data / "train.json"), str(out),
                         max_samples=4, cutoff_len=1000, max_steps=1)
    llm = rt.TrainableModule(str(tiny_llm_dir), out)
    try:
        assert isinstance(llm("hello", max_tokens=3), str)
        assert llm.model_path == str(out)
    finally:
        llm.stop()


def test_wrong_order_and_bad_params_say_what_to_do(tiny_llm_dir, tiny_embedder_dir):
    m = rt.TrainableModule(str(tiny_llm_dir)).mode("finetune")
    with pytest.raises(UsageError, match=r"\.trainset\("):
        m.update()
    with pytest.raises(ConfigError, match="learning_rat"):
        m.finetune_method(rt.finetune.lora, learning_rat=1e-4)
    with pytest.raises(ConfigError, match="unknown mode"):
        m.mode("train")
    with pytest.raises(ConfigError, match="unknown fine-tune method"):
        m.finetune_method("qlora")
    with pytest.raises(ConfigError, match="unknown deploy method"):
        m.deploy_method("tgi")
    emb = rt.TrainableModule(str(tiny_embedder_dir)).mode("finetune").trainset([{"query": "q", "pos": ["p"]}])
    emb.finetune_method(rt.finetune.lora)
    with pytest.raises(UsageError, match="rt.finetune.embedding"):
        emb.update()


def test_embedding_module_embeds(tiny_embedder_dir):
    emb = rt.TrainableModule(str(tiny_embedder_dir))
    vecs = emb(["pump valve", "north station"])
    assert len(vecs) == 2 and len(vecs[0]) == 32
    one = emb("pump valve")
    assert one == pytest.approx(vecs[0], abs=1e-5)
    assert sum(v * v for v in one) == pytest.approx(1.0, abs=1e-4)


def test_chapter_rag_example_with_ragtune_names(tiny_llm_dir, tiny_embedder_dir, manual_data, tmp_path):
    """The chapter's "use the fine-tuned models in RAG" code, nearly verbatim, on tiny models."""
    import os

    out = tmp_path / "sft"
    rt.finetune.lora.run(str(tiny_llm_dir), str(manual_data / "train.json"), str(out),
                         max_samples=4, cutoff_len=1000, max_steps=1)
    kb = tmp_path / "KB"
    kb.mkdir()
    passages = sorted({r["context"] for r in json.loads((manual_data / "test_squad.json").read_text())})
    (kb / "kb.txt").write_text("\n".join(passages))

    prompt = ("You will act as an AI question-answering assistant and complete a dialogue task. "
              "In this task, you need to provide your answers based on the given context and questions.")
    llm = rt.TrainableModule(str(tiny_llm_dir), str(out))
    embed = rt.TrainableModule(str(tiny_embedder_dir))
    documents = rt.Document(dataset_path=os.path.join(str(tmp_path), "KB"), embed=embed, manager=False)
    documents.create_node_group(name="split_sent", transform=lambda s: s.split("\n"))
    with rt.pipeline() as ppl:
        ppl.retriever = rt.Retriever(doc=documents, group_name="split_sent", similarity="cosine", topk=1,
                                     output_format="content", join="")
        ppl.formatter = (lambda nodes, query: dict(context_str=nodes, query=query)) | rt.rag.bind(query=ppl.input)
        ppl.llm = llm.prompt(rt.rag.ChatPrompter(instruction=prompt, extra_keys=["context_str"]))
    try:
        answer = ppl("What is the warranty of the machine?")
        assert isinstance(answer, str)
        retrieved = ppl.retriever("What is the warranty of the machine?")
        assert retrieved in passages          # top-1 passage, joined as content
    finally:
        llm.stop()


def test_local_llm_prompt_accepts_a_rag_prompter(tiny_llm_dir):
    from ragtune.engine.client import LocalLLM

    llm = LocalLLM.load(str(tiny_llm_dir), max_tokens=3)
    prompted = llm.prompt(rt.ChatPrompter(instruction="Use the context.", extra_keys=["context_str"]))
    out = prompted({"context_str": "the pump", "query": "what?"})
    expected = llm([{"role": "system", "content": "Use the context.\n\n### context_str:\nthe pump"},
                    {"role": "user", "content": "what?"}])
    assert out == expected
