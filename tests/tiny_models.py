"""Tiny random models built in seconds, so the test suite needs no download.

- ``make_tiny_llm(dir)``: a 2-layer Gemma-3 (tied embeddings, like gemma-3-270m) with a byte-level
  BPE tokenizer trained on a small synthetic corpus (so any text, Chinese included, tokenizes).
- ``make_tiny_embedder(dir)``: a 2-layer BERT + mean pooling + normalize, saved as a
  sentence-transformers folder.
"""
from __future__ import annotations

import random
import string
from pathlib import Path

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def synthetic_corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["the", "pump", "valve", "model", "serial", "answer", "question", "paragraph", "filter",
             "replace", "every", "months", "hours", "pressure", "bar", "north", "station", "is",
             "what", "which", "of", "a", "to", "in", "use", "original", "text", "known", "北京",
             "上海", "问题", "答案", "段落", "原文"]
    lines = []
    for _ in range(n):
        k = rng.randint(4, 14)
        line = " ".join(rng.choice(words) for _ in range(k))
        line += " " + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(4))
        lines.append(line)
    lines += [string.printable, "### Known paragraph: ### Question: ### Answer:"]
    return lines


def make_tokenizer(vocab_size: int = 384, chat_template: str | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(synthetic_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>")
    fast.add_bos_token = True
    if chat_template:
        fast.chat_template = chat_template
    return fast


def make_tiny_llm(path: str | Path, *, chat_template: str | None = None, seed: int = 0,
                  hidden_size: int = 64, num_layers: int = 2) -> Path:
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    path = Path(path)
    tok = make_tokenizer(chat_template=chat_template)
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=1024, sliding_window=64, tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        layer_types=["sliding_attention", "full_attention"][:num_layers] + ["full_attention"] * max(0, num_layers - 2),
    )
    model = Gemma3ForCausalLM(config)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_tiny_embedder(path: str | Path, *, seed: int = 0, hidden_size: int = 32) -> Path:
    import torch
    from sentence_transformers import SentenceTransformer
    try:  # sentence-transformers >= 6 moved the module classes
        from sentence_transformers.sentence_transformer import modules as st_models
    except ImportError:  # pragma: no cover - older releases
        from sentence_transformers import models as st_models
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    path = Path(path)
    hf_dir = path.parent / (path.name + "-hf")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=400, special_tokens=[
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False)
    tok.train_from_iterator(synthetic_corpus(), trainer=trainer)
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(fast), hidden_size=hidden_size, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=hidden_size * 2,
                        max_position_embeddings=256)
    BertModel(config).save_pretrained(hf_dir)
    fast.save_pretrained(hf_dir)
    transformer = st_models.Transformer(str(hf_dir), max_seq_length=128)
    dim_fn = getattr(transformer, "get_embedding_dimension", None) or transformer.get_word_embedding_dimension
    pooling = st_models.Pooling(dim_fn(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling, st_models.Normalize()], device="cpu").save(str(path))
    return path
