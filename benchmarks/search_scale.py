"""Search a workspace's whole history: the message index at the scale of every mirrored message.

Corpus: every message of the text-stage tables in ``--text`` (default: ``data/text/*.parquet``, all splits),
one row each (``message_index.message_rows``). Vectors: the model's (``--model``, default the release
folder) at full dim, read from the embedding cache (``--cache``) where an earlier run put them, encoded
otherwise. Queries: the eval's test queries (``--eval-sets``), real chat messages that were not indexed as
queries but are themselves messages of the corpus, so a query's own message is one of its exact neighbours.

Measured, on this CPU, for one query at a time (what a user's search does):

* **exact**: float32 cosine over every message (numpy), the reference for recall@10, and LanceDB's flat
  scan of the same table (``bypass_vector_index``);
* **LanceDB** ``IVF_HNSW_SQ`` (the ``message_index`` default) for a grid of query settings (``ef``,
  ``nprobes``, ``refine_factor``: re-ranking on the stored float32 vectors), and ``IVF_PQ`` for comparison;
* **usearch** HNSW over int8 vectors, re-scored at float32 (the bare-library alternative), and **faiss**
  HNSW over float32 (``--bare``, needs the ``bench`` extra);
* build time and bytes per message, against 1,536 bytes of float32 at 384 dims;
* **incremental**: the index built on 99% of the messages, then brought up to date with the last 1% by
  ``message_index.update_index`` with the model encoding them for real; against a full rebuild (encoding
  every message, ``--full-encode-s`` when measured by a separate run, plus the index build measured here).

    python benchmarks/search_scale.py --out docs/search_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thread_embed_pipeline import storage  # noqa: E402
from thread_embed_pipeline.evaluation.embedders import encode_texts, load_local_embedder, model_fingerprint  # noqa: E402  # noqa: E402
from thread_embed_pipeline.evaluation.embedding_cache import EmbeddingCache  # noqa: E402  # noqa: E402
from thread_embed_pipeline.search.message_index import IndexSettings, MessageIndex, message_rows, update_index  # noqa: E402


def _cpu_flags() -> list[str]:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split(":")[1].split()
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")))


def _cpu_model() -> str:
    try:
        return next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")).split(":")[1].strip()
    except (OSError, StopIteration):
        return platform.processor()


def _recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:10]) & set(t[:10])) / 10 for f, t in zip(found, truth)]))


def _timed_queries(fn, queries: np.ndarray) -> tuple[list[list[int]], float]:
    fn(queries[0])  # warm-up
    start = time.perf_counter()
    found = [fn(q) for q in queries]
    return found, len(queries) / (time.perf_counter() - start)


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", nargs="*", help="text-stage tables (default: <data dir>/text/*.parquet)")
    parser.add_argument("--model", default=str(storage.data_dir() / "release" / "model"))
    parser.add_argument("--cache", default=str(storage.data_dir() / "embedding_cache.duckdb"))
    parser.add_argument("--eval-sets", default=str(storage.data_dir() / "eval_sets.parquet"))
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--bare", action="store_true", help="also usearch and faiss (pip install '.[bench]')")
    parser.add_argument("--full-encode-s", type=float, help="seconds a separate run took to encode every message (the rebuild's encoding; measured here when --cache does not exist yet)")
    parser.add_argument("--work", help="a folder for the indexes (default: a temporary one)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    out: dict = {"cpu": _cpu_model(), "cpu_flags": _cpu_flags(), "cores": os.cpu_count(), "dim": args.dim}
    save = lambda: Path(args.out).write_text(json.dumps(out, indent=1), encoding="utf-8")  # noqa: E731 -- results as they come
    paths = [Path(p) for p in args.text] if args.text else sorted((storage.data_dir() / "text").glob("*.parquet"))
    rows = pd.concat([message_rows(pd.read_parquet(p)) for p in paths], ignore_index=True)
    out["messages"] = len(rows)
    out["unique_texts"] = int(rows["text"].nunique())
    print(f"{len(rows)} messages ({out['unique_texts']} unique texts) from {len(paths)} tables", flush=True)
    fresh_cache = not Path(args.cache).exists()  # then vectors_s below is a full encoding of every unique text
    cache = EmbeddingCache(args.cache)
    embedder = load_local_embedder(args.model, name="bench", cache=cache, log=lambda m: print(m, flush=True))
    start = time.perf_counter()
    vectors = embedder.embed(rows["text"].tolist(), args.dim)
    out["vectors_s"] = round(time.perf_counter() - start, 1)
    if fresh_cache:
        out["full_encode_s"] = out["vectors_s"]
        out["full_encode_messages_per_s"] = round(out["unique_texts"] / max(out["vectors_s"], 1e-9), 1)
        args.full_encode_s = args.full_encode_s or out["vectors_s"]
    sets = pd.read_parquet(args.eval_sets)
    query_texts = list(dict.fromkeys(sets.loc[sets["record_type"] == "query", "text"]))
    rng = np.random.default_rng(0)
    query_texts = [query_texts[i] for i in sorted(rng.choice(len(query_texts), min(args.queries, len(query_texts)), replace=False))]
    queries = embedder.embed(query_texts, args.dim)
    out["queries"] = len(queries)
    save()

    # exact, the reference
    def numpy_exact(q):
        s = vectors @ q
        top = np.argpartition(-s, 10)[:10]
        return top[np.argsort(-s[top])].tolist()

    truth, qps = _timed_queries(numpy_exact, queries)
    truth = np.array(truth)
    out["exact_numpy"] = {"qps": round(qps, 1), "recall@10": 1.0, "bytes_per_message": args.dim * 4}
    print("exact numpy", out["exact_numpy"], flush=True)
    save()

    work = Path(args.work or tempfile.mkdtemp(prefix="search_scale_"))
    model_id = model_fingerprint(args.model, max_seq_length=getattr(embedder.model, "max_seq_length", None))  # as the message_index asset does
    position = {m: i for i, m in enumerate(rows["message_id"])}
    by_text = lambda texts: embedder.embed(list(texts), args.dim)  # noqa: E731 -- from the cache
    out["lancedb"] = {}
    for index_type in ("IVF_HNSW_SQ", "IVF_PQ"):
        settings = IndexSettings(index_type=index_type, ann_min_rows=1)
        folder = work / index_type.lower()
        t0 = time.perf_counter()
        summary = update_index(folder, rows, by_text, model_id=model_id, dim=args.dim, settings=settings, log=lambda m: print(m, flush=True))
        build_s = time.perf_counter() - t0 - summary["encode_s"]
        index = MessageIndex(folder)
        index_bytes = _folder_bytes(folder / "messages.lance" / "_indices")
        entry = {"build_s": round(build_s, 1), "table_bytes_per_message": round(summary["bytes"] / len(rows), 1), "index_bytes_per_message": round(index_bytes / len(rows), 1), "grid": []}
        if index_type == "IVF_HNSW_SQ":
            _, qps = _timed_queries(lambda q: [position[m] for m in index.search_messages(q, 10, exact=True, columns=("message_id",))["message_id"]], queries[:100])
            out["exact_lancedb_flat"] = {"qps": round(qps, 1)}
        grid = [(ef, nprobes, refine) for ef in (32, 64, 128) for nprobes in (2, 4, 8) for refine in (1, 4, 10)] if "HNSW" in index_type else [(0, nprobes, refine) for nprobes in (4, 8, 16) for refine in (1, 4, 10)]
        for ef, nprobes, refine in grid:
            tuned = index.with_settings(ef=max(ef, 10), nprobes=nprobes, refine_factor=refine)
            found, qps = _timed_queries(lambda q: [position[m] for m in tuned.search_messages(q, 10, columns=("message_id",))["message_id"]], queries)
            entry["grid"].append({"ef": ef, "nprobes": nprobes, "refine_factor": refine, "qps": round(qps, 1), "recall@10": round(_recall(found, truth), 4)})
            print(index_type, entry["grid"][-1], flush=True)
            out["lancedb"][index_type] = entry
            save()

    if args.bare:
        from usearch.index import Index

        t0 = time.perf_counter()
        us = Index(ndim=args.dim, metric="cos", dtype="i8", connectivity=16, expansion_add=128)
        us.add(np.arange(len(vectors)), vectors)
        entry = {"build_s": round(time.perf_counter() - t0, 1), "index_bytes_per_message": round(us.memory_usage / len(vectors), 1), "grid": []}
        for expansion in (32, 64, 128):
            us.expansion_search = expansion
            for shortlist in (10, 40):
                def search(q, shortlist=shortlist):
                    keys = us.search(q, shortlist).keys.astype(np.int64)
                    if shortlist > 10:  # re-score the shortlist on float32
                        keys = keys[np.argsort(-(vectors[keys] @ q))]
                    return keys[:10].tolist()

                found, qps = _timed_queries(search, queries)
                entry["grid"].append({"expansion_search": expansion, "shortlist": shortlist, "qps": round(qps, 1), "recall@10": round(_recall(found, truth), 4)})
                print("usearch i8", entry["grid"][-1], flush=True)
        out["usearch_hnsw_i8"] = entry
        save()
        import faiss

        faiss.omp_set_num_threads(out["cores"] or 1)
        t0 = time.perf_counter()
        fi = faiss.IndexHNSWFlat(args.dim, 32, faiss.METRIC_INNER_PRODUCT)
        fi.add(vectors)
        entry = {"build_s": round(time.perf_counter() - t0, 1), "index_bytes_per_message": round((args.dim * 4 + 32 * 2 * 4), 1), "grid": []}
        for ef in (32, 64, 128):
            fi.hnsw.efSearch = ef
            found, qps = _timed_queries(lambda q: fi.search(q[None, :], 10)[1][0].tolist(), queries)
            entry["grid"].append({"efSearch": ef, "qps": round(qps, 1), "recall@10": round(_recall(found, truth), 4)})
            print("faiss hnsw", entry["grid"][-1], flush=True)
        out["faiss_hnsw_flat"] = entry
        save()

    # incremental: 99% indexed, then the last 1% (whole threads, the newest conversation ids) encoded for real and added
    order = rows["conversation_id"].drop_duplicates().sort_values()
    cut = order.iloc[int(len(order) * 0.99)]
    old, new = rows[rows["conversation_id"] < cut], rows[rows["conversation_id"] >= cut]
    folder = work / "incremental"
    summary = update_index(folder, old, by_text, model_id=model_id, dim=args.dim, log=lambda m: print(m, flush=True))
    build_s = summary["seconds"] - summary["encode_s"]
    model = embedder.model
    fresh = lambda texts: np.asarray(encode_texts(model, list(texts)), dtype=np.float32)[:, : args.dim]  # noqa: E731 -- no cache: real encoding
    update = update_index(folder, rows, lambda t: _normalise(fresh(t)), model_id=model_id, dim=args.dim, log=lambda m: print(m, flush=True))
    index = MessageIndex(folder)
    found, _ = _timed_queries(lambda q: [position[m] for m in index.search_messages(q, 10, columns=("message_id",))["message_id"]], queries)
    out["incremental"] = {
        "indexed_before": len(old), "new_messages": len(new), "new_share": round(len(new) / len(rows), 4),
        "update_s": update["seconds"], "update_encode_s": update["encode_s"], "index_build_s": round(build_s, 1),
        "recall@10_after_update": round(_recall(found, truth), 4),
    }
    if args.full_encode_s:
        rebuild = args.full_encode_s + build_s
        out["incremental"].update({"full_rebuild_s": round(rebuild, 1), "update_share_of_rebuild": round(update["seconds"] / rebuild, 4)})
    print("incremental", out["incremental"], flush=True)
    save()
    return 0


def _normalise(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


if __name__ == "__main__":
    raise SystemExit(main())
