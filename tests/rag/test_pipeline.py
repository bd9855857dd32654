"""The chapter's RAG example, nearly verbatim, with a real tiny transformers LM behind ragtune.infer."""
from __future__ import annotations

import pytest

import ragtune as rt
from ragtune.core.errors import ConfigError

from .helpers import BowEmbedder

KB = ["pump pump valve", "pump filter", "oil oil oil", "station north pressure bar", "valve"]
PROMPT = ("You will act as an AI question-answering assistant and complete a dialogue task. "
          "Answer from the given context.")


@pytest.fixture(scope="module")
def llm(tiny_chat_llm_dir):
    from ragtune.engine.client import LocalLLM

    return LocalLLM.load(str(tiny_chat_llm_dir), dtype="fp32", max_tokens=6)


def test_chapter_rag_example_answers_from_retrieved_context(tmp_path, llm):
    kb = tmp_path / "KB"
    kb.mkdir()
    (kb / "knowledge_base.txt").write_text("\n".join(KB))
    seen = []

    def recording_llm(messages):
        seen.append(messages)
        return llm(messages)

    documents = rt.Document(dataset_path=str(kb), embed=BowEmbedder(), manager=False)
    documents.create_node_group(name="split_sent", transform=lambda s: s.split("\n"))
    with rt.pipeline() as ppl:
        ppl.retriever = rt.Retriever(doc=documents, group_name="split_sent", similarity="cosine", topk=1,
                                     output_format="content", join="")
        ppl.formatter = (lambda nodes, query: dict(context_str=nodes, query=query)) | rt.rag.bind(query=ppl.input)
        ppl.llm = rt.rag.LLM(recording_llm, messages=True).prompt(
            rt.rag.ChatPrompter(instruction=PROMPT, extra_keys=["context_str"]))
    ppl.start()
    for question, context in (("station pressure?", "station north pressure bar"), ("oil?", "oil oil oil")):
        answer = ppl(question)
        expected_msgs = [{"role": "system", "content": f"{PROMPT}\n\n### context_str:\n{context}"},
                         {"role": "user", "content": question}]
        assert seen[-1] == expected_msgs                 # the LLM saw exactly the retrieved context
        assert answer == llm(expected_msgs)              # and the answer is its greedy output for it
        assert isinstance(answer, str) and answer
    assert [n for n, _ in ppl.steps] == ["retriever", "formatter", "llm"]


def test_chat_client_gets_messages_plain_callable_gets_text(tmp_path, llm):
    (tmp_path / "kb.txt").write_text("\n".join(KB))
    doc = rt.Document(tmp_path / "kb.txt", embed=BowEmbedder())
    doc.create_node_group("lines", transform="line")
    prompter = rt.rag.ChatPrompter("Context: {context_str}\nQuestion: {query}")
    got = []
    ppl = rt.pipeline(rt.Retriever(doc, "lines", topk=1, output_format="content", join=""),
                      lambda ctx: {"context_str": ctx, "query": "which valve?"},
                      rt.rag.with_prompt(lambda text: got.append(text) or text.upper(), prompter))
    assert ppl("valve") == "CONTEXT: VALVE\nQUESTION: WHICH VALVE?\n\nANSWER:"
    assert rt.rag.with_prompt(llm, prompter).messages is True       # LocalLLM: chat messages


def test_bind_and_prompter_errors():
    with pytest.raises(ConfigError, match="outside a run"):
        rt.pipeline().input.resolve()
    with pytest.raises(ConfigError, match="lacks \\['context_str'\\]"):
        rt.rag.ChatPrompter("x", extra_keys=["context_str"]).messages({"query": "q"})
    with pytest.raises(ConfigError, match="empty pipeline"):
        rt.pipeline()("x")
    with pytest.raises(ConfigError, match="must be callable"):
        with rt.pipeline() as ppl:
            ppl.retriever = 3
