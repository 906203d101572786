"""A Matryoshka funnel for chat search: shortlist at a small dim (optionally binary), re-rank at full dim.

Corpus: every thread of a text-stage table (default: ``data/text/irc_disentangle.parquet``, all splits,
as one document each, ``search.thread_documents``). Queries: one message per test conversation (its
middle message), so a query is a real chat message. The model: a checkpoint (default: the ``model``
asset's). Embeddings are computed once at full dim (cached in ``<data dir>/benchmarks/``).

Search only is timed, the query embeddings being given: for every variant, all queries in batches of
``--batch`` against all documents, best of ``--repeats`` runs, on the CPU this runs on. Recall@10 is the
share of the exhaustive full-dim search's top 10 that a variant returns in its top 10.

Variants:

* ``exhaustive``: float32 cosine at full dim over every document (the reference);
* ``float@<d> → rerank``: float32 cosine at ``d`` dims over every document, the top ``m`` re-ranked at full dim;
* ``binary@<d> → rerank``: ``sentence_transformers.quantize_embeddings(..., precision="ubinary")`` of the
  first ``d`` dims, Hamming distance over every document (``numpy.bitwise_count``), the top ``m`` re-ranked
  at full dim in float32.

    python benchmarks/matryoshka_funnel.py --model models/thread-embed-minilm --out docs/matryoshka_funnel.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thread_embed_pipeline import storage  # noqa: E402
from thread_embed_pipeline.evaluation.embedders import truncate_and_normalize  # noqa: E402
from thread_embed_pipeline.schemas import format_message  # noqa: E402
from thread_embed_pipeline.search.retriever import thread_documents  # noqa: E402


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(part, order, axis=1)


def exhaustive(q: np.ndarray, d: np.ndarray, k: int) -> np.ndarray:
    return _top(q @ d.T, k)


def funnel(q_full: np.ndarray, d_full: np.ndarray, q_small, d_small, m: int, k: int, binary: bool) -> np.ndarray:
    if binary:  # Hamming distance on packed bits: smaller is closer
        dist = np.bitwise_count(q_small[:, None, :] ^ d_small[None, :, :]).sum(axis=2, dtype=np.int32)
        short = _top(-dist.astype(np.float32), m)
    else:
        short = _top(q_small @ d_small.T, m)
    cand = d_full[short]  # (queries, m, dim)
    rescored = np.einsum("qd,qmd->qm", q_full, cand)
    return np.take_along_axis(short, _top(rescored, k), axis=1)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def timed(fn, queries: int, batch: int, repeats: int) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeats):
        parts = []
        start = time.perf_counter()
        for i in range(0, queries, batch):
            parts.append(fn(slice(i, i + batch)))
        best = min(best, time.perf_counter() - start)
        out = np.concatenate(parts)
    return queries / best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--text", default=str(storage.data_dir() / "text" / "irc_disentangle.parquet"))
    parser.add_argument("--model", help="checkpoint (default: the model asset's)")
    parser.add_argument("--out", default="docs/matryoshka_funnel.json")
    parser.add_argument("--dims", default="64,128")
    parser.add_argument("--shortlists", default="50,100,200")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util.quantization import quantize_embeddings

    model_path = args.model or json.loads((storage.data_dir() / "model.json").read_text())["checkpoint_dir"]
    text = pd.read_parquet(args.text)
    docs = thread_documents(text, split=None)
    test = text[text["split"] == "test"].sort_values(["conversation_id", "message_idx"])
    queries = [format_message(g["author"].iat[len(g) // 2], g["text"].iat[len(g) // 2]) for _, g in test.groupby("conversation_id") if len(g) >= 2]
    cache = storage.data_dir() / "benchmarks" / "matryoshka_funnel.embeddings.npz"  # not under docs/: 4 bytes x dim per text
    cache.parent.mkdir(parents=True, exist_ok=True)
    if cache.is_file() and json.loads(str(np.load(cache)["meta"])) == {"model": str(model_path), "docs": len(docs), "queries": len(queries)}:
        loaded = np.load(cache)
        d_full, q_full = loaded["docs"], loaded["queries"]
    else:
        model = SentenceTransformer(str(model_path), device="cpu")
        t = time.perf_counter()
        d_full = model.encode(docs["text"].tolist(), batch_size=32, convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
        q_full = model.encode(queries, batch_size=64, convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
        print(f"encoded {len(docs)} threads and {len(queries)} queries in {time.perf_counter() - t:.0f}s", flush=True)
        np.savez(cache, docs=d_full, queries=q_full, meta=json.dumps({"model": str(model_path), "docs": len(docs), "queries": len(queries)}))
    full = d_full.shape[1]
    d_n, q_n = truncate_and_normalize(d_full, full), truncate_and_normalize(q_full, full)
    k, nq = args.k, len(queries)
    rows = []
    qps, truth = timed(lambda s: exhaustive(q_n[s], d_n, k), nq, args.batch, args.repeats)
    rows.append({"variant": "exhaustive", "dim": full, "shortlist": None, "bytes_per_vector": full * 4, "queries_per_s": qps, "recall@10": 1.0})
    for dim in [int(x) for x in args.dims.split(",")]:
        d_s, q_s = truncate_and_normalize(d_full, dim), truncate_and_normalize(q_full, dim)
        d_b, q_b = quantize_embeddings(d_full[:, :dim], precision="ubinary"), quantize_embeddings(q_full[:, :dim], precision="ubinary")
        for m in [int(x) for x in args.shortlists.split(",")]:
            for binary, (qs, ds), nbytes in ((False, (q_s, d_s), dim * 4), (True, (q_b, d_b), dim // 8)):
                qps, found = timed(lambda s: funnel(q_n[s], d_n, qs[s], ds, m, k, binary), nq, args.batch, args.repeats)
                rows.append({"variant": f"{'binary' if binary else 'float'}@{dim} → rerank@{full}", "dim": dim, "shortlist": m, "bytes_per_vector": nbytes, "queries_per_s": qps, "recall@10": recall(found, truth)})
                print(rows[-1], flush=True)
    base_qps = rows[0]["queries_per_s"]
    for r in rows:
        r["speedup"] = r["queries_per_s"] / base_qps
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), [])
    result = {
        "model": str(Path(model_path).name), "documents": len(docs), "queries": nq, "k": k, "batch": args.batch,
        "cpu": platform.processor() or platform.machine(), "cpu_flags": sorted(f for f in flags if f.startswith(("avx", "amx", "sse4"))),
        "numpy": np.__version__, "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(pd.DataFrame(rows).round(4).to_string(index=False))


if __name__ == "__main__":
    main()
