"""Evaluate checkpoints, the base model, BM25 and API models on eval sets from the command line.

    python -m thread_embed_pipeline.evaluation \\
        --eval-set path/to/pools.jsonl --eval-set path/to/beir_folder=my_beir \\
        --model base=sentence-transformers/all-MiniLM-L6-v2 --model fine_tuned=models/thread-embed-minilm \\
        --model openai:text-embedding-3-small --out data/reports/cli

Eval sets: a ``.jsonl`` file in the reference pool format, a BEIR folder (corpus.jsonl, queries.jsonl,
qrels/test.tsv), or the project's own ``data/eval_sets.parquet``; ``PATH=NAME`` names the set.
Models: ``NAME=SPEC`` or ``SPEC`` (a checkpoint folder, a Hub id, a bundled model, ``openai:<model>``,
``voyage:<model>``). API keys come from OPENAI_API_KEY / VOYAGE_API_KEY; a missing key skips that
model with a note. Writes eval_report.md, results/comparisons/per_query Parquet and PNG plots.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from thread_embed_pipeline import storage
from thread_embed_pipeline.evaluation.embedders import ENCODE_BATCH_SIZE
from thread_embed_pipeline.evaluation.embedding_cache import EmbeddingCache
from thread_embed_pipeline.evaluation.external import EvalSetFormatError, read_external_eval_set
from thread_embed_pipeline.evaluation.runner import ApiSettings, build_embedders, run_evaluation, write_report_files
from thread_embed_pipeline.schemas import EVAL_SET_COLUMNS, missing_columns

DEFAULT_DIMS = (384, 256, 128, 64)


def _split_named(value: str) -> tuple[str | None, str]:
    """``NAME=VALUE`` → (NAME, VALUE); plain ``VALUE`` → (None, VALUE). ``openai:x`` has no ``=``."""
    if "=" in value:
        left, right = value.split("=", 1)
        return left, right
    return None, value


def load_eval_sets(specs: list[str]) -> tuple[pd.DataFrame, list[str]]:
    frames, notes = [], []
    for spec in specs:
        path_text, name = spec.rsplit("=", 1) if "=" in spec else (spec, None)
        path = Path(path_text)
        if not path.exists():
            raise FileNotFoundError(f"eval set {path} does not exist")
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
            missing = missing_columns(frame.columns, EVAL_SET_COLUMNS)
            if missing:
                raise ValueError(f"{path} is not an eval-set table: missing columns {missing}")
        else:
            frame, set_notes = read_external_eval_set(path, name=name or path.stem)
            notes += set_notes
        frames.append(frame)
    return pd.concat(frames, ignore_index=True), notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m thread_embed_pipeline.evaluation", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval-set", action="append", required=True, help="pool .jsonl, BEIR folder or eval_sets.parquet; PATH=NAME to name it")
    parser.add_argument("--model", action="append", default=[], help="NAME=SPEC or SPEC; repeatable")
    parser.add_argument("--dims", type=int, nargs="+", default=list(DEFAULT_DIMS))
    parser.add_argument("--no-bm25", action="store_true")
    parser.add_argument("--hybrid", action="append", default=None, help="model names to fuse with BM25 (default: every local model)")
    parser.add_argument(
        "--dev-set",
        action="append",
        default=[],
        help="dev-split sets (same formats) on which the hybrid's fusion weight is chosen, e.g. data/dev_eval_sets.parquet; without one only the RRF hybrid is scored",
    )
    parser.add_argument("--out", type=Path, default=storage.data_dir() / "reports" / "cli")
    parser.add_argument("--batch-size", type=int, default=ENCODE_BATCH_SIZE)
    parser.add_argument("--bootstrap-resamples", type=int, default=1000)
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from thread_embed_pipeline.models import load_sentence_model

    try:
        eval_sets, notes = load_eval_sets(args.eval_set)
        dev_sets = load_eval_sets(args.dev_set)[0] if args.dev_set else None
    except (EvalSetFormatError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    model_specs = {}
    for value in args.model:
        name, spec = _split_named(value)
        model_specs[name or spec] = spec
    cache = None if args.no_cache else EmbeddingCache(storage.data_dir() / "embedding_cache.duckdb")
    api = ApiSettings.from_environment()
    embedders, skip_notes = build_embedders(model_specs, load_local=load_sentence_model, api=api, cache=cache, batch_size=args.batch_size, log=print)
    notes += skip_notes
    for note in skip_notes:
        print(note)
    local = [n for n, s in model_specs.items() if not s.startswith(("openai:", "voyage:"))]
    outputs = run_evaluation(
        eval_sets,
        embedders,
        dims=args.dims,
        include_bm25=not args.no_bm25,
        hybrid_with=args.hybrid if args.hybrid is not None else local,
        dev_sets=dev_sets,
        notes=notes,
        n_resamples=args.bootstrap_resamples,
        log=print,
    )
    write_report_files(outputs, args.out, title="Eval report (CLI)")
    print(f"report: {outputs.files['report']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
