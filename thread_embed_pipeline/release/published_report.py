"""What the eval report publishes besides its own files: the model card and the dev-chosen hybrid weight
(``hybrid_retriever.json``, read by :meth:`~thread_embed_pipeline.search.HybridRetriever.from_checkpoint`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from thread_embed_pipeline.evaluation.embedders import model_fingerprint
from thread_embed_pipeline.evaluation.fusion import recommended_hybrid
from thread_embed_pipeline.evaluation.maxsim import is_maxsim, maxsim_name
from thread_embed_pipeline.evaluation.report import improvement_summary
from thread_embed_pipeline.evaluation.runner import EvaluationOutputs, write_report_files
from thread_embed_pipeline.release.card import write_model_card
from thread_embed_pipeline.schemas import OWN_EVAL_SET
from thread_embed_pipeline.search.retriever import write_retriever_settings


@dataclass(frozen=True)
class PublishedReport:
    """What :func:`publish_report` wrote and derived besides the report files."""

    improvement: pd.DataFrame  # thread MRR@10 per dim, fine-tuned vs base (next to BM25), per source
    recommended: dict | None  # the hybrid chosen on dev (fusion.recommended_hybrid)
    model_card: Path
    retriever_settings: Path | None  # hybrid_retriever.json for HybridRetriever.from_checkpoint


def publish_report(outputs: EvaluationOutputs, model_summary: Mapping, out_dir: Path) -> PublishedReport:
    """Write the report files, the model card and the dev-chosen hybrid weight into ``out_dir``."""
    results = outputs.results
    write_report_files(outputs, out_dir)
    thread_sources = sorted(results.loc[results["task"] == "thread", "source"].unique()) if not results.empty else []
    parts = [improvement_summary(results, task="thread", source=s) for s in thread_sources]
    improvement = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    recommended = recommended_hybrid(outputs.fusion, eval_set=OWN_EVAL_SET)
    # the fine-tuned model's best hybrid on dev, its threads encoded whole or scored by their messages (max-sim)
    own = outputs.fusion[outputs.fusion["model"].isin(["fine_tuned", maxsim_name("fine_tuned")])] if not outputs.fusion.empty else outputs.fusion
    tuned = recommended_hybrid(own, eval_set=OWN_EVAL_SET) if not own.empty else None
    settings = None
    if tuned is not None:
        settings = write_retriever_settings(
            out_dir,
            weight=tuned["weight"],
            dim=tuned["dim"],
            chosen_on="dev split, pseudonymised protocol",
            scope=tuned["scope"],
            fingerprint=model_fingerprint(model_summary["checkpoint_dir"]),  # the weight belongs to this checkpoint
            maxsim=outputs.maxsim_aggregation if is_maxsim(tuned["dense_model"]) else None,
        )
    card = write_model_card(dict(model_summary), out_dir / "model_card.md", report_markdown=outputs.markdown, improvement=improvement, recommended=recommended)
    return PublishedReport(improvement=improvement, recommended=recommended, model_card=card, retriever_settings=settings)
