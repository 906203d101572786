"""``disentanglement/<variant>``: the link scorer trained on the IRC train files with one model's
embeddings (``fine_tuned``, ``base``) or none (``features_only``, the ablation), scored on the test files.

Thin wrapper around :mod:`thread_embed_pipeline.disentanglement` and
:mod:`thread_embed_pipeline.disentanglement.metrics`. ``disentanglement/comparison`` scores the
variants' written links against each other on the same test files (paired bootstrap over files).
Each variant's asset writes, under
``data/disentanglement/<variant>/``: the predicted links of every test file in the upstream
annotation format (``<file>.annotation.txt``), the fitted scorer (``scorer.joblib`` / ``scorer.json``,
which the CLI loads) and ``metrics.parquet``; the metrics table with bootstrap CIs over files is the
asset's value and its metadata.
"""


from pathlib import Path

import dagster as dg
import pandas as pd

from thread_embed_pipeline import storage
from thread_embed_pipeline.disentanglement.scorers import SCORERS
from thread_embed_pipeline.disentanglement.features import WINDOW, gold_links
from thread_embed_pipeline.disentanglement.logs import channel_logs
from thread_embed_pipeline.disentanglement.linking import disentangle_splits
from thread_embed_pipeline.disentanglement.metrics import links_to_annotation, paired_file_bootstrap, parse_annotation
from thread_embed_pipeline.orchestration.automation import versioned_output
from thread_embed_pipeline.orchestration.keys import raw_key
from thread_embed_pipeline.orchestration.metadata import table
from thread_embed_pipeline.orchestration.resources import TrainerResource
from thread_embed_pipeline.versioning import code_version

SOURCE = "irc_disentangle"
VARIANTS = ("features_only", "base", "fine_tuned")
COMPARISONS = (("fine_tuned", "features_only"), ("base", "features_only"), ("fine_tuned", "base"))  # (a, b): a minus b


class DisentanglementConfig(dg.Config):
    """The scorer's settings; the defaults are the ones chosen on dev (docs/results.md)."""

    window: int = WINDOW
    dims: list[int] = [384, 64]  # Matryoshka dims whose cosine is a feature (above the model's: dropped)
    max_train_files: int = 40  # train files sampled (seeded) for the scorer; 153 in all
    scorers: list[str] = list(SCORERS)  # "logreg:<C>" / "mlp:<h1>x<h2>" / "listwise:<h1>x<h2>[*<members>]": the best on dev (link F) is kept
    bootstrap_resamples: int = 200
    seed: int = 0


def disentanglement_key(variant: str) -> dg.AssetKey:
    return dg.AssetKey(["disentanglement", variant])


def _embed_fn(variant: str, model: dict, trainer: TrainerResource, log):
    from thread_embed_pipeline.evaluation.embedders import load_local_embedder
    from thread_embed_pipeline.evaluation.embedding_cache import EmbeddingCache
    from thread_embed_pipeline.models import load_sentence_model

    if variant == "features_only":
        return None, None, 0
    spec = model["checkpoint_dir"] if variant == "fine_tuned" else model["base_model"]
    cache = EmbeddingCache(storage.data_dir() / "embedding_cache.duckdb")
    embedder = load_local_embedder(spec, name=variant, model=load_sentence_model(spec, device=trainer.device), cache=cache, log=log)
    return embedder.embed, spec, int(embedder.max_dim)


def build_disentanglement_asset(variant: str) -> dg.AssetsDefinition:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: {VARIANTS}")

    @dg.asset(
        key=disentanglement_key(variant),
        ins={"raw": dg.AssetIn(raw_key(SOURCE)), **({"model": dg.AssetIn("model")} if variant != "features_only" else {})},
        group_name="disentanglement",
        kinds={"scikitlearn", "pytorch"},
        code_version=code_version("disentanglement"),
        description=(
            f"Conversation disentanglement of the IRC test files (Kummerfeld et al. 2019) with "
            + ("no embeddings (the ablation)" if variant == "features_only" else f"the {variant.replace('_', '-')} model's embeddings")
            + ": a link scorer (logistic regression or a listwise MLP, chosen on dev) trained on train files; link P/R/F, scaled 1-VI, one-to-one, "
            "conversation exact-match P/R/F, ARI, AMI with bootstrap CIs over files; predicted links in the upstream annotation format."
        ),
    )
    def _asset(context: dg.AssetExecutionContext, config: DisentanglementConfig, trainer: TrainerResource, raw, **model_in: dict) -> dg.Output[pd.DataFrame]:
        trainer.apply_environment()
        raw_frame = pd.read_parquet(raw) if isinstance(raw, (str, Path)) else raw
        logs = channel_logs(raw_frame)
        embed, spec, max_dim = _embed_fn(variant, model_in.get("model", {}), trainer, context.log.info)
        dims = [d for d in config.dims if d <= max_dim] if embed is not None else []
        try:
            run = disentangle_splits(logs, embed, dims, window=config.window, max_train_files=config.max_train_files, models=config.scorers, n_resamples=config.bootstrap_resamples, seed=config.seed, log=context.log.info)
        except ValueError as err:
            raise dg.Failure(description=f"{SOURCE}/raw: {err}") from None
        scorer, auto, metrics = run["scorer"], run["links"], run["metrics"].assign(variant=variant)
        scorer.chosen["model"] = spec
        out = _write(storage.data_dir() / "disentanglement" / variant, scorer, auto, metrics)
        context.add_output_metadata(_metadata(run, metrics, spec, dims, out))
        return versioned_output(metrics)

    return _asset


def _write(out: Path, scorer, links: dict, metrics: pd.DataFrame) -> Path:
    scorer.save(out)
    for f, file_links in links.items():
        storage.atomic_write_text(out / f"{f}.annotation.txt", links_to_annotation(file_links))
    storage.atomic_write_bytes(out / "metrics.parquet", lambda tmp: metrics.to_parquet(tmp, index=False))
    return out


def _metadata(run: dict, metrics: pd.DataFrame, spec, dims: list[int], out: Path) -> dict:
    shown = metrics.assign(**{c: (metrics[c] * 100).round(1) for c in ("value", "ci_low", "ci_high")})
    value = metrics.set_index("metric")["value"]
    chosen = run["scorer"].chosen
    return {
        "metrics_percent": table(shown[["metric", "value", "ci_low", "ci_high", "n_files"]]),
        "conversation_f": float(round(value["exact_f"] * 100, 1)), "one_minus_vi": float(round(value["one_minus_vi"] * 100, 1)),
        "link_f": float(round(value["link_f"] * 100, 1)), "chosen_scorer": chosen["scorer"], "dev_choice": dg.MetadataValue.json(chosen["tried"]),
        "model": spec or "none", "dims": ", ".join(map(str, dims)) or "none", "train_files": run["train_files"],
        "test_messages": run["test_messages"], "link_test_s": round(run["link_test_s"], 2), "links": dg.MetadataValue.path(str(out)),
    }


class ComparisonConfig(dg.Config):
    bootstrap_resamples: int = 1000
    seed: int = 0


@dg.asset(
    key=disentanglement_key("comparison"),
    ins={"raw": dg.AssetIn(raw_key(SOURCE)), **{v: dg.AssetIn(disentanglement_key(v)) for v in VARIANTS}},
    group_name="disentanglement",
    code_version=code_version("disentanglement"),
    description="Paired comparison of the disentanglement variants on the same IRC test files: each metric's difference "
    "(fine-tuned minus features only, base minus features only, fine-tuned minus base) with a paired bootstrap CI over files and its p-value.",
)
def disentanglement_comparison(context: dg.AssetExecutionContext, config: ComparisonConfig, raw, **variants: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    raw_frame = pd.read_parquet(raw) if isinstance(raw, (str, Path)) else raw
    logs = channel_logs(raw_frame[raw_frame["split_hint"] == "test"])
    gold = {f: gold_links(g) for f, g in logs.groupby("file")}
    links = {v: _read_links(storage.data_dir() / "disentanglement" / v, gold) for v in VARIANTS}
    comparison = pd.concat([
        paired_file_bootstrap(gold, links[a], links[b], n_resamples=config.bootstrap_resamples, seed=config.seed).assign(system_a=a, system_b=b)
        for a, b in COMPARISONS
    ], ignore_index=True)
    shown = comparison[comparison["metric"].isin(["link_f", "one_minus_vi", "one_to_one", "exact_f"])]
    shown = shown.assign(**{c: (shown[c] * 100).round(1) for c in ("a", "b", "delta", "ci_low", "ci_high")})
    context.add_output_metadata({
        "comparison_percent": table(shown[["system_a", "system_b", "metric", "a", "b", "delta", "ci_low", "ci_high", "p_value", "ci_excludes_0"]]),
        "n_files": len(gold),
    })
    return versioned_output(comparison)  # stored by the IO manager as data/disentanglement/comparison.parquet


def _read_links(folder: Path, gold: dict) -> dict[str, set[tuple[int, int]]]:
    missing = [f for f in gold if not (folder / f"{f}.annotation.txt").is_file()]
    if missing:
        raise dg.Failure(description=f"{folder}: no predicted links for {len(missing)} test files, e.g. {missing[:3]}: rematerialise {folder.name}")
    return {f: parse_annotation((folder / f"{f}.annotation.txt").read_text()) for f in gold}


def disentanglement_assets() -> list[dg.AssetsDefinition]:
    return [*(build_disentanglement_asset(v) for v in VARIANTS), disentanglement_comparison]
