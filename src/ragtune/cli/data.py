"""`ragtune data validate | convert | evalset | manuals | embed-pairs | mine-negatives | augment-json | to-beir | synth | label`.

Options that belong to a job's typed config (EmbedPairsConfig, MineNegativesConfig,
AugmentJsonConfig) are generated from it, so flags, YAML (``--config``) and Python agree.
"""
from __future__ import annotations

import json

import click

from ..core.config import config_options
from ..data.augment import AugmentJsonConfig
from ..data.embed_pairs import EmbedPairsConfig
from ..data.mining import MineNegativesConfig


@click.group("data")
def data() -> None:
    """Validate and convert data; build eval sets and embedding training sets."""


def _echo_summary(summary, as_json: bool) -> None:
    click.echo(json.dumps(summary.to_dict(), ensure_ascii=False, indent=2) if as_json else str(summary))


json_flag = click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
config_flag = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                           help="YAML file with the options (flags override it).")


@data.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--cutoff-len", type=int, help="Count samples longer than this many tokens (needs --tokenizer).")
@click.option("--tokenizer", help="Model whose tokenizer counts tokens (name, local dir or HF id).")
@click.option("--system", help="System prompt training will add (counts toward the length).")
@click.option("--max-issues", type=int, default=50, show_default=True, help="Issue lines to print (an issue shared by many records is one line).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a token-length histogram PNG here.")
@json_flag
def validate_cmd(file, cutoff_len, tokenizer, system, max_issues, plot, as_json) -> None:
    """Check every record of FILE (Alpaca or OpenAI messages; JSON, JSONL, CSV, Parquet).

    Exits with status 1 when any record is invalid."""
    from ..data.validate import validate

    report = validate(file, cutoff_len=cutoff_len, tokenizer=tokenizer,
                      prompt={"system": system} if system else None)
    if as_json:
        click.echo(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        click.echo(report.summary(max_issues))
    if plot:
        from ..data.validate import plot_lengths

        click.echo(f"length histogram: {plot_lengths(report, plot)}", err=as_json)
    if not report.ok:
        # A ClickException, not ctx.exit(1): ragtune.cli.main runs click with standalone_mode=False
        # and ignores the code click returns for ctx.exit, so only an exception yields status 1.
        if report.total == 0:
            raise click.ClickException(f"{file} holds no records")
        raise click.ClickException(f"{len(report.invalid_records)} of {report.total} records in {file} are invalid")


@data.command("convert")
@click.option("--from", "source", default="squad", show_default=True,
              type=click.Choice(["squad", "alpaca", "messages", "auto"]), help="Input format.")
@click.option("--to", "to", default="alpaca", show_default=True, type=click.Choice(["alpaca", "messages"]),
              help="Output format.")
@click.option("--template", help="Instruction template with {context} and {question} (squad only); "
              "the escapes \\n and \\t typed in a shell become a newline and a tab.")
@click.option("--template-lang", type=click.Choice(["en", "zh"]),
              help="Built-in template language (squad only) [default: en].")
@click.argument("input_file", metavar="IN", type=click.Path(dir_okay=False))
@click.argument("output_file", metavar="OUT", type=click.Path(dir_okay=False))
@json_flag
def convert_cmd(source, to, template, template_lang, input_file, output_file, as_json) -> None:
    """Convert IN to OUT: squad -> alpaca instruction data, or alpaca <-> messages (lossless).

    OUT ending in .jsonl is written as JSONL, anything else as a JSON array."""
    from ..core.prompt import unescape_cli
    from ..data.convert import convert

    template = unescape_cli(template)   # a shell passes "\n" as two characters; templates need real newlines
    _echo_summary(convert(input_file, output_file, source=source, to=to, template=template,
                          template_lang=template_lang), as_json)


@data.command("evalset")
@click.option("--from", "source", default="squad", show_default=True, type=click.Choice(["squad"]))
@click.argument("input_file", metavar="IN", type=click.Path(dir_okay=False))
@click.argument("output_file", metavar="OUT", type=click.Path(dir_okay=False))
@json_flag
def evalset_cmd(source, input_file, output_file, as_json) -> None:
    """Build an eval set {id, context, question, answers, all_answers} from span-extraction rows."""
    from ..data.squad import evalset

    _echo_summary(evalset(input_file, output_file, source=source), as_json)


@data.command("manuals")
@click.argument("outdir", metavar="OUTDIR", type=click.Path(file_okay=False))
@click.option("--machines", default=50, show_default=True, help="Fictional machines (one manual each).")
@click.option("--questions", default=4, show_default=True, help="Questions per manual.")
@click.option("--eval-fraction", default=0.2, show_default=True, help="Share of manuals held out for eval.")
@click.option("--seed", default=0, show_default=True, help="Seed of the generator and of the split.")
@json_flag
def manuals_cmd(outdir, machines, questions, eval_fraction, seed, as_json) -> None:
    """Fictional maintenance manuals as SQuAD-style rows: OUTDIR/train_squad.json and
    OUTDIR/test_squad.json, split by manual (what examples/manuals_gemma.yaml reads)."""
    from pathlib import Path

    from ..core.io import atomic_write_json
    from ..data.manuals import generate_manuals, split_by_passage

    train, test = split_by_passage(generate_manuals(machines, questions, seed=seed), eval_fraction, seed=seed)
    out = Path(outdir)
    paths = {"train": atomic_write_json(out / "train_squad.json", train),
             "test": atomic_write_json(out / "test_squad.json", test)}
    summary = {"train": len(train), "test": len(test), **{f"{k}_file": str(v) for k, v in paths.items()}}
    click.echo(json.dumps(summary, indent=2) if as_json
               else f"{len(train)} train rows -> {paths['train']}\n{len(test)} test rows -> {paths['test']}")


@data.command("embed-pairs")
@click.argument("input_file", metavar="IN", type=click.Path(dir_okay=False))
@click.argument("outdir", metavar="OUTDIR", type=click.Path(file_okay=False))
@config_options(EmbedPairsConfig)
@config_flag
@json_flag
def embed_pairs_cmd(input_file, outdir, config_path, as_json, **options) -> None:
    """Question/passage rows -> OUTDIR/train.jsonl {query,pos,neg,prompt}, OUTDIR/eval.jsonl
    {query,corpus} and OUTDIR/kb/knowledge_base.txt."""
    from ..data.embed_pairs import embed_pairs

    cfg = EmbedPairsConfig.from_sources(config_path, **options)
    _echo_summary(embed_pairs(input_file, outdir, cfg), as_json)


@data.command("mine-negatives")
@click.argument("input_file", metavar="IN", type=click.Path(dir_okay=False))
@click.argument("output_file", metavar="OUT", type=click.Path(dir_okay=False))
@config_options(MineNegativesConfig)
@config_flag
@json_flag
def mine_negatives_cmd(input_file, output_file, config_path, as_json, **options) -> None:
    """Replace the negatives of IN (embed-pairs train.jsonl) with hard negatives mined by --model."""
    from ..data.mining import mine_negatives

    cfg = MineNegativesConfig.from_sources(config_path, **options)
    _echo_summary(mine_negatives(input_file, output_file, cfg), as_json)


@data.command("augment-json")
@click.argument("input_file", metavar="IN", type=click.Path(dir_okay=False))
@click.argument("output_file", metavar="OUT", type=click.Path(dir_okay=False))
@config_options(AugmentJsonConfig)
@config_flag
@json_flag
def augment_json_cmd(input_file, output_file, config_path, as_json, **options) -> None:
    """Corrupt the input JSON of a fraction of records (clean targets kept) for JSON-repair training."""
    from ..data.augment import augment_json

    cfg = AugmentJsonConfig.from_sources(config_path, **options)
    _echo_summary(augment_json(input_file, output_file, cfg), as_json)


def _synth_config_cls():
    from ..synth.pipeline import SynthConfig

    return SynthConfig


def _label_config_cls():
    from ..synth.label import LabelConfig

    return LabelConfig


@data.command("synth")
@click.argument("docs", metavar="DOCS", type=click.Path(exists=True))
@config_options(_synth_config_cls(), exclude=("docs",))
@config_flag
@json_flag
def synth_cmd(docs, config_path, as_json, **options) -> None:
    """Documents -> questions with verbatim answers from a --teacher (URL or local model) -> filtered
    SFT set, embedding pairs, eval set and KB in --output, split by document. Resumable.

    \b
    ragtune data synth KB/ --teacher http://127.0.0.1:8000/v1 --output synth/
    ragtune data synth KB/ --teacher gemma-3-270m --output synth/ --review      # then --apply-review
    """
    from ..synth.pipeline import SynthConfig, synthesize

    cfg = SynthConfig.from_sources(config_path, docs=docs, **options)
    summary = synthesize(cfg)
    _echo_summary(summary, as_json)
    _warn_teacher_errors(summary)


@data.command("label")
@click.argument("input_file", metavar="IN", type=click.Path(dir_okay=False, exists=True))
@config_options(_label_config_cls(), exclude=("input",))
@config_flag
@json_flag
def label_cmd(input_file, config_path, as_json, **options) -> None:
    """Answer the unlabelled questions of IN ({question, context}) with the --teacher: verbatim spans,
    validated like synth, written to --output as Alpaca SFT rows (--logprobs K adds the teacher's
    top-K token distribution for `ragtune finetune --method kd`). Resumable."""
    from ..synth.label import LabelConfig, label

    cfg = LabelConfig.from_sources(config_path, input=input_file, **options)
    summary = label(cfg)
    _echo_summary(summary, as_json)
    _warn_teacher_errors(summary)


def _warn_teacher_errors(summary) -> None:
    failed = {k: v for k, v in summary.notes.items() if "teacher errors" in k and v}
    for key, n in failed.items():
        click.echo(f"warning: {n} {key}", err=True)


@data.command("to-beir")
@click.argument("evalset", metavar="EVAL", type=click.Path())
@click.argument("outdir", metavar="OUTDIR", type=click.Path(file_okay=False))
@click.option("--kb", "kb", multiple=True, type=click.Path(),
              help="Distractor passages: a knowledge-base .txt (one per line), a directory of them, or a "
                   "train .jsonl (its pos and neg). Repeatable.")
@click.option("--split", default="test", show_default=True, help="Name of the qrels file (qrels/SPLIT.tsv).")
@click.option("--allow-unjudged", is_flag=True,
              help="EVAL is a BEIR directory: skip its queries with no positive judgment instead of failing.")
@json_flag
def to_beir_cmd(evalset, outdir, kb, split, allow_unjudged, as_json) -> None:
    """Eval set EVAL ({query, corpus} lines, or a BEIR directory) -> the BEIR directory OUTDIR
    (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv) that BEIR, MTEB and FlagEmbedding evaluate."""
    from ..data.beir import to_beir

    _echo_summary(to_beir(evalset, outdir, kb, split, allow_unjudged=allow_unjudged), as_json)
