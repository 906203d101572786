"""Asset checks: schemas, non-empty outputs, pair sanity and no train/eval leakage."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import dagster as dg
import duckdb
import pandas as pd
import pyarrow.parquet as pq

from thread_embed_pipeline.orchestration.keys import corpus_key, pairs_key, text_key
from thread_embed_pipeline.text.audit import original_handles
from thread_embed_pipeline import storage
from thread_embed_pipeline.evaluation.embedders import load_local_embedder
from thread_embed_pipeline.evaluation.embedding_cache import EmbeddingCache
from thread_embed_pipeline.evaluation.eval_sets import eval_texts, protocol_of
from thread_embed_pipeline.evaluation.runner import compare_with_base
from thread_embed_pipeline.schemas import OWN_EVAL_SET
from thread_embed_pipeline.orchestration.resources import TrainerResource
from thread_embed_pipeline.schemas import CORPUS_COLUMNS, NEGATIVE_COLUMN, PAIR_COLUMNS, SPLITS, missing_columns
from thread_embed_pipeline.sources.hf_registry import HF_SOURCES
from thread_embed_pipeline.sources.registry import SOURCES


def leakage_findings(training_pairs: pd.DataFrame, eval_sets: pd.DataFrame) -> dict[str, int]:
    """Counts of training pairs that share a conversation with, or a text equal to, an eval query or positive."""
    shared_conversations = set(training_pairs["conversation_id"]) & set(eval_sets["conversation_id"])
    texts = eval_texts(eval_sets)
    return {
        "shared_conversation_ids": len(shared_conversations),
        "pairs_with_eval_text": int((training_pairs["anchor"].isin(texts) | training_pairs["positive"].isin(texts)).sum()),
        "negatives_with_eval_text": int(training_pairs[NEGATIVE_COLUMN].isin(texts).sum()) if NEGATIVE_COLUMN in training_pairs.columns else 0,
        "non_train_pairs": int((training_pairs["split"] != "train").sum()),
    }


@dg.asset_check(
    asset="training_pairs",
    additional_ins={"eval_sets": dg.AssetIn("eval_sets")},
    blocking=True,
    description="Blocking: no training pair comes from an eval conversation or a non-train split, or has a side equal to an eval query or positive.",
)
def training_pairs_do_not_leak_eval_data(training_pairs: pd.DataFrame, eval_sets: pd.DataFrame) -> dg.AssetCheckResult:
    """No training pair comes from an eval conversation, a non-train split, or has a side equal to an eval text."""
    findings = leakage_findings(training_pairs, eval_sets)
    return dg.AssetCheckResult(passed=not any(findings.values()), metadata=findings)


PAIRS_CHECK_DESCRIPTION = (
    "Blocking: the pairs are not empty, have every pair column, no anchor or positive is empty or equal to the other, "
    "and every side's message span is a non-empty range of message_idx."
)


def pair_sanity_findings(pairs: pd.DataFrame) -> dict[str, int]:
    missing = missing_columns(pairs.columns, PAIR_COLUMNS)
    bad_span = pd.Series(False, index=pairs.index)
    if not missing:
        for side in ("anchor", "positive"):
            bad_span |= (pairs[f"{side}_start"] < 0) | (pairs[f"{side}_end"] <= pairs[f"{side}_start"])
    return {
        "missing_columns": len(missing),
        "invalid_span": int(bad_span.sum()),
        "empty_anchor": int((pairs["anchor"].fillna("").str.strip() == "").sum()),
        "empty_positive": int((pairs["positive"].fillna("").str.strip() == "").sum()),
        "anchor_equals_positive": int((pairs["anchor"] == pairs["positive"]).sum()),
    }


@dg.asset_check(
    asset="training_pairs",
    blocking=True,
    description=PAIRS_CHECK_DESCRIPTION,
)
def training_pairs_sane(training_pairs: pd.DataFrame) -> dg.AssetCheckResult:
    findings = pair_sanity_findings(training_pairs)
    return dg.AssetCheckResult(passed=not any(findings.values()) and len(training_pairs) > 0, metadata={**findings, "rows": len(training_pairs)})


CORPUS_CHECK_DESCRIPTION = (
    "Blocking: the corpus is not empty, has every corpus column, every split is train/dev/test, "
    "no message text is empty, and no conversation spans two splits."
)


def corpus_findings(corpus: pd.DataFrame | Path) -> tuple[dict[str, int], int]:
    """The corpus check's findings and row count, computed by DuckDB over a DataFrame (file sources)
    or a Parquet file it never loads whole (streamed sources): one implementation for both."""
    columns = corpus.columns if isinstance(corpus, pd.DataFrame) else pq.ParquetFile(corpus).schema_arrow.names
    rows = len(corpus) if isinstance(corpus, pd.DataFrame) else pq.ParquetFile(corpus).metadata.num_rows
    if missing_columns(columns, CORPUS_COLUMNS):
        return {"missing_columns": len(missing_columns(columns, CORPUS_COLUMNS))}, rows
    splits = ", ".join(f"'{s}'" for s in SPLITS)
    with duckdb.connect() as con:
        if isinstance(corpus, pd.DataFrame):
            con.register("c", corpus[["conversation_id", "split", "text"]])
        else:
            literal = str(corpus).replace("'", "''")  # DDL takes no bound parameters
            con.execute(f"CREATE VIEW c AS SELECT * FROM read_parquet('{literal}')")
        unknown, empty = con.execute(
            f"SELECT count(*) FILTER (WHERE split IS NULL OR split NOT IN ({splits})), "
            "count(*) FILTER (WHERE regexp_full_match(coalesce(text, ''), '[[:space:]]*')) FROM c"
        ).fetchone()
        several = con.execute("SELECT count(*) FROM (SELECT conversation_id FROM c GROUP BY 1 HAVING count(DISTINCT split) > 1)").fetchone()[0]
    return {"missing_columns": 0, "unknown_split": int(unknown), "empty_text": int(empty), "conversations_in_several_splits": int(several)}, rows


def _corpus_check(name: str, value_type: type) -> dg.AssetChecksDefinition:
    """The corpus check of one source; ``value_type`` is how its corpus loads: a DataFrame (file
    sources) or the Parquet file's Path (streamed sources, which the IO manager never loads whole)."""

    def check(corpus) -> dg.AssetCheckResult:
        findings, rows = corpus_findings(corpus)
        return dg.AssetCheckResult(passed=rows > 0 and not any(findings.values()), metadata={**findings, "rows": rows})

    check.__annotations__ = {"corpus": value_type, "return": dg.AssetCheckResult}
    return dg.asset_check(asset=corpus_key(name), name="schema_and_splits", blocking=True, description=CORPUS_CHECK_DESCRIPTION)(check)


def _pairs_check(name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=pairs_key(name),
        name="schema_and_sanity",
        blocking=True,
        description=PAIRS_CHECK_DESCRIPTION,
    )
    def check(pairs: pd.DataFrame) -> dg.AssetCheckResult:
        findings = pair_sanity_findings(pairs)
        return dg.AssetCheckResult(passed=len(pairs) > 0 and not any(findings.values()), metadata={**findings, "rows": len(pairs)})

    return check


HANDLES_CHECK_DESCRIPTION = (
    "Blocking: no @handle that is not a pseudonym (an author's, or anyone's mentioned, participant or not) is left in the "
    "text the model trains on. Skipped (passes, with a note) when the text asset was built with speakers: original."
)


def _handle_findings(texts) -> dict:
    found = original_handles(texts)
    return {"original_handles": int(sum(found.values())), "distinct_handles": len(found)}


def _text_check(name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=text_key(name), name="no_original_handles", blocking=True, description=HANDLES_CHECK_DESCRIPTION)
    def check(text: pd.DataFrame) -> dg.AssetCheckResult:
        authors = text["author"].dropna()
        if len(authors) and not authors.str.fullmatch(r"speaker_\d+").all():
            return dg.AssetCheckResult(passed=True, metadata={"note": "speakers: original (names visible by request): not audited"})
        findings = _handle_findings(text["text"])
        return dg.AssetCheckResult(passed=findings["original_handles"] == 0, metadata=findings)

    return check


@dg.asset_check(asset="eval_exports", name="no_original_handles", blocking=True, description="Blocking: the exported pools and BEIR files hold no @handle that is not a pseudonym.")
def eval_exports_hold_no_original_handles() -> dg.AssetCheckResult:
    files = sorted(p for p in (storage.data_dir() / "exports").rglob("*") if p.is_file())
    findings = _handle_findings(line for p in files for line in p.read_text(encoding="utf-8", errors="replace").splitlines())
    return dg.AssetCheckResult(passed=findings["original_handles"] == 0, metadata={**findings, "files": len(files)})


def dev_check_verdict(comparison: pd.DataFrame) -> bool:
    """At least as good as the base model: no set where the fine-tuned model is significantly worse
    (the delta's 95% CI entirely below 0), and not worse on average."""
    if comparison.empty:
        return True
    significantly_worse = (comparison["delta_ci_high"] < 0).any()
    return bool(not significantly_worse and comparison["delta"].mean() >= 0)


@dg.asset_check(
    asset="model",
    name="at_least_as_good_as_base_on_dev",
    additional_ins={"dev_eval_sets": dg.AssetIn("dev_eval_sets")},
    blocking=False,
    description=(
        "Thread retrieval MRR@10 on the dev split, never test, in every protocol dev_eval_sets holds (pseudonymised; "
        "configs/speaker_views.yaml adds per-conversation pseudonyms and speaker-free queries): the fine-tuned model vs its "
        "base model. Warning severity: fails when the fine-tuned model is significantly worse on some set or worse on average."
    ),
)
def model_at_least_as_good_as_base_on_dev(context, trainer: TrainerResource, model: dict, dev_eval_sets: pd.DataFrame) -> dg.AssetCheckResult:
    trainer.apply_environment()
    # every view of the own sets on dev (pseudonymised; with configs/speaker_views.yaml also per-conversation
    # pseudonyms and speaker-free queries): the fine-tuned model must hold up in each
    sets = dev_eval_sets[dev_eval_sets["eval_set"].map(protocol_of).notna() & (dev_eval_sets["task"] == "thread")]
    # the same cache as eval_report, which then finds these dev embeddings already computed
    cache = EmbeddingCache(storage.data_dir() / "embedding_cache.duckdb")
    fine_tuned = load_local_embedder(model["checkpoint_dir"], name="fine_tuned", cache=cache, device=trainer.device)
    base = load_local_embedder(model["base_model"], name="base", cache=cache, device=trainer.device)
    comparison = compare_with_base(sets, fine_tuned=fine_tuned, base=base, log=context.log.info)
    passed = dev_check_verdict(comparison)
    meta: dict = {"mean_delta_mrr@10": round(float(comparison["delta"].mean()), 4) if len(comparison) else 0.0}
    for row in comparison.itertuples():
        view = "" if row.eval_set == OWN_EVAL_SET else f"{protocol_of(row.eval_set)}/"
        meta[f"{view}{row.source}/{row.task}"] = f"{row.base:.3f} -> {row.fine_tuned:.3f} (delta {row.delta:+.3f} [{row.delta_ci_low:+.3f}, {row.delta_ci_high:+.3f}], n={row.n})"
    return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.WARN, metadata=meta)




def all_checks(streamed_sources: Sequence[str] = tuple(HF_SOURCES), user_sources: Sequence[str] = (), mirrored_sources: Sequence[str] = tuple(SOURCES)) -> list[dg.AssetChecksDefinition]:
    """Every check: per source (the mirrored ones, the user's exports, the enabled streamed ones), then the graph's."""
    per_source = [check for name in [*mirrored_sources, *user_sources] for check in (_corpus_check(name, pd.DataFrame), _text_check(name), _pairs_check(name))]
    per_source += [check for name in streamed_sources for check in (_corpus_check(name, Path), _pairs_check(name))]
    return [*per_source, eval_exports_hold_no_original_handles, training_pairs_do_not_leak_eval_data, training_pairs_sane, model_at_least_as_good_as_base_on_dev]
