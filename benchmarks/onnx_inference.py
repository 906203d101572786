"""CPU inference: PyTorch fp32 against the ONNX fp32 and int8 exports, in texts/s and in MRR@10.

The model is a checkpoint (default: the ``model`` asset's) and its ``model_onnx`` folder (exported here
when missing). Throughput: ``--texts`` eval documents (real chat threads of the pseudonymised test sets,
the longest first as the eval encodes them, at the checkpoint's max_seq_length), each variant encoding
them in batches of ``--batch``, best of ``--repeats``. Quality: MRR@10 of every variant on every thread set
(thread and concurrent-thread tasks, pseudonymised protocol) of ``eval_sets``, at full dim and at 64, with
the eval report's own code; PyTorch's vectors come from the embedding cache when it has them.

    python benchmarks/onnx_inference.py --out docs/onnx_inference.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thread_embed_pipeline import storage  # noqa: E402
from thread_embed_pipeline.evaluation.embedders import load_local_embedder  # noqa: E402  # noqa: E402
from thread_embed_pipeline.evaluation.embedding_cache import EmbeddingCache  # noqa: E402  # noqa: E402
from thread_embed_pipeline.evaluation.eval_sets import OWN_EVAL_SET  # noqa: E402  # noqa: E402
from thread_embed_pipeline.evaluation.retrieval import evaluate_retrieval  # noqa: E402  # noqa: E402
from thread_embed_pipeline.release.onnx import export_onnx, texts_per_second  # noqa: E402
from thread_embed_pipeline.models import onnx_specs  # noqa: E402
from thread_embed_pipeline.models import load_sentence_model  # noqa: E402


class _FastembedModel:
    """fastembed's ``TextEmbedding`` on a local export (``specific_model_path``: nothing fetched), with the
    ``encode`` signature ``texts_per_second`` calls. It tokenises with the folder's tokenizer files and
    truncates at ``min(model_max_length, max_length)`` of tokenizer_config.json."""

    def __init__(self, folder: Path, file: str, *, dim: int) -> None:
        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType

        name = "local/thread-embed-export"
        TextEmbedding.add_custom_model(model=name, pooling=PoolingType.MEAN, normalization=True, sources=ModelSource(hf=name), dim=dim, model_file=file)
        self.model = TextEmbedding(model_name=name, specific_model_path=str(folder), threads=__import__("torch").get_num_threads())

    def encode(self, texts, batch_size=32, **_):
        import numpy as np

        return np.array(list(self.model.embed(list(texts), batch_size=batch_size)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="checkpoint folder (default: the model asset's)")
    parser.add_argument("--texts", type=int, default=384)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--messages", type=int, default=600, help="real chat messages for the message throughput (what a message index encodes)")
    parser.add_argument("--fastembed", action="store_true", help="also fastembed on the fused fp32 file, offline (pip install fastembed); throughput and cosine only")
    parser.add_argument("--no-quality", action="store_true", help="throughput only (the MRR@10 part encodes every eval text with every variant)")
    parser.add_argument("--out", type=Path, default=Path("docs/onnx_inference.json"))
    args = parser.parse_args()

    data = storage.data_dir()
    checkpoint = args.model or Path(json.loads((data / "model.json").read_text())["checkpoint_dir"])
    onnx_folder = checkpoint.with_name(checkpoint.name + "-onnx")
    export = export_onnx(checkpoint, onnx_folder, log=print) if not (onnx_folder / "onnx").is_dir() else None
    sets = pd.read_parquet(data / "eval_sets.parquet")
    sets = sets[(sets["eval_set"] == OWN_EVAL_SET) & sets["task"].isin(["thread", "concurrent_thread"])]
    docs = sets.loc[sets["record_type"] == "document", "text"].drop_duplicates()
    sample = sorted(docs.sample(n=min(args.texts, len(docs)), random_state=0), key=len, reverse=True)
    all_messages = pd.Series([m for ms in sets.loc[sets["record_type"] == "document", "messages"] for m in ms]).drop_duplicates()
    messages = all_messages.sample(n=min(args.messages, len(all_messages)), random_state=0).tolist()

    specs = {"pytorch_fp32": str(checkpoint), **onnx_specs(onnx_folder, "fine_tuned")}
    models = {name: load_sentence_model(spec, device="cpu") for name, spec in specs.items()}
    timed = dict(models)
    if args.fastembed:
        timed["fastembed_onnx"] = _FastembedModel(onnx_folder, "onnx/model.onnx", dim=models["pytorch_fp32"].get_embedding_dimension())
    speed, message_speed = {}, {}
    for name, model in timed.items():
        texts_per_second(model, sample[: args.batch], batch_size=args.batch)  # warm-up
        speed[name] = round(texts_per_second(model, sample, batch_size=args.batch, repeats=args.repeats), 2)
        message_speed[name] = round(texts_per_second(model, messages, batch_size=args.batch, repeats=args.repeats), 2)
        print(f"{name}: {speed[name]} thread texts/s, {message_speed[name]} messages/s")
    reference = models["pytorch_fp32"].encode(messages, batch_size=args.batch, normalize_embeddings=True)
    message_cosine = {}
    for name, model in timed.items():
        got = model.encode(messages, batch_size=args.batch, normalize_embeddings=True)
        cos = (got * reference).sum(axis=1)
        message_cosine[name] = {"min": round(float(cos.min()), 4), "mean": round(float(cos.mean()), 5)}
    if args.no_quality:
        report = {"texts_per_s": speed, "messages_per_s": message_speed, "message_cosine_vs_pytorch": message_cosine, "export": export, "texts": len(sample), "messages": len(messages)}
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
        return

    cache = EmbeddingCache(data / "embedding_cache.duckdb")
    embedders = {name: load_local_embedder(specs[name], name=name, model=model, cache=cache, log=print) for name, model in models.items()}
    max_dim = embedders["pytorch_fp32"].max_dim
    results = evaluate_retrieval(sets, embedders, dims=[64, max_dim], include_bm25=False, n_resamples=200, log=print)
    mrr = results[results["metric"] == "mrr@10"].pivot_table(index=["source", "task", "dim"], columns="model", values="value").reset_index()
    for name in ("fine_tuned_onnx", "fine_tuned_onnx_int8"):
        mrr[f"{name} - pytorch"] = mrr[name] - mrr["pytorch_fp32"]
    print(mrr.to_string(index=False))

    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), [])
    report = {
        "checkpoint": checkpoint.name,
        "cpu": platform.processor() or platform.machine(),
        "cpu_flags": sorted(f for f in flags if f.startswith(("avx", "amx"))),
        "threads": __import__("torch").get_num_threads(),
        "texts": len(sample),
        "batch": args.batch,
        "max_seq_length": int(models["pytorch_fp32"].max_seq_length),
        "texts_per_s": speed,
        "speedup_vs_pytorch": {name: round(v / speed["pytorch_fp32"], 2) for name, v in speed.items()},
        "messages": len(messages),
        "messages_per_s": message_speed,
        "message_speedup_vs_pytorch": {name: round(v / message_speed["pytorch_fp32"], 2) for name, v in message_speed.items()},
        "message_cosine_vs_pytorch": message_cosine,
        "export": export,
        "mrr10": mrr.round(4).to_dict(orient="records"),
        "max_abs_mrr10_delta": {name: round(float(mrr[f"{name} - pytorch"].abs().max()), 4) for name in ("fine_tuned_onnx", "fine_tuned_onnx_int8")},
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("texts_per_s", "speedup_vs_pytorch", "max_abs_mrr10_delta")}, indent=2))


if __name__ == "__main__":
    main()
