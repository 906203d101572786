"""The chat-search CLI: a query in, the threads it belongs to (or that answer it) out, each with the message
that matched first. Over one source's thread index (``search_index/<source>``) or, with ``--index
messages``, the workspace's message index.

    python -m thread_embed_pipeline.search "how do I fix a broken apt install" --source irc_disentangle --k 5
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from thread_embed_pipeline import storage
from thread_embed_pipeline.evaluation.embedders import model_fingerprint, truncate_and_normalize
from thread_embed_pipeline.search.retriever import SETTINGS_FILE, HybridRetriever, index_path, load_or_build_index, messages_to_read, thread_documents


def _default_model() -> str:
    release = storage.data_dir() / "release" / "model"
    if (release / "modules.json").is_file():
        return str(release)
    summary = storage.data_dir() / "model.json"
    if summary.is_file():
        return json.loads(summary.read_text(encoding="utf-8"))["checkpoint_dir"]
    raise FileNotFoundError(f"no model: materialise `model` (or `release/model`), or pass --model (looked in {release} and {summary})")


def _search_message_index(args, parser) -> int:
    """``--index messages``: the workspace's message index (:mod:`.message_index`), answered thread by thread."""
    from thread_embed_pipeline.models import load_sentence_model
    from thread_embed_pipeline.search.message_index import MessageIndex, default_index_dir
    from thread_embed_pipeline.text import redact_text

    try:
        index = MessageIndex(default_index_dir())
    except FileNotFoundError as err:
        parser.error(f"{err}; materialise it with the job message_index_job")
    model_path = args.model or _default_model()
    model = load_sentence_model(model_path, device="cpu")
    if Path(model_path).is_dir() and model_fingerprint(model_path, max_seq_length=getattr(model, "max_seq_length", None)) != index.model_id:
        parser.error(f"the message index was built with another model than {model_path}: rematerialise message_index")
    weight = args.weight
    if weight is None:
        settings = Path(model_path) / SETTINGS_FILE
        weight = json.loads(settings.read_text(encoding="utf-8"))["weight"] if settings.is_file() else 0.5
    query, _ = redact_text(args.query)
    vector = truncate_and_normalize(np.asarray(model.encode([query], convert_to_numpy=True), dtype=np.float32), index.dim)[0]
    hits = index.thread_hits(query, vector, weight=weight, k=args.k)
    threads = index.thread_messages([h.conversation_id for h in hits])
    for rank, hit in enumerate(hits, start=1):
        messages = threads[hit.conversation_id]
        print(f"{rank}. {hit.conversation_id}  (score {hit.score:.3f}, {len(messages)} messages, all)")
        for j, line in enumerate(messages_to_read(messages, query, args.messages, first=hit.message)):
            print(f"   {'  > ' if j == 0 else '    '}{line[:200]}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m thread_embed_pipeline.search "how do I fix a broken apt install" --source irc_disentangle --k 5``."""
    import argparse

    from thread_embed_pipeline.text import TextSettings, prepare_text, redact_text

    parser = argparse.ArgumentParser(prog="python -m thread_embed_pipeline.search", description="Find the threads a message belongs to or answers it: the dev-chosen BM25 + dense hybrid over a source's threads.")
    parser.add_argument("query", help="a message or question")
    parser.add_argument("--source", default="irc_disentangle", help="a source whose text stage is in the data folder (data/text/<source>.parquet)")
    parser.add_argument("--corpus", help="a corpus Parquet file (the corpus schema) to search instead; it goes through the text stage first")
    parser.add_argument("--split", default="test", help="which conversations to index: train, dev, test (default) or all")
    parser.add_argument("--k", type=int, default=5, help="how many threads to show")
    parser.add_argument("--messages", type=int, default=3, help="messages to read per thread")
    parser.add_argument("--model", help="a checkpoint folder or model name (default: data/release/model, else the model asset's checkpoint)")
    parser.add_argument("--weight", type=float, help="the dense share of the fusion (default: the dev-chosen weight in hybrid_retriever.json)")
    parser.add_argument("--dim", type=int, help="the Matryoshka dim (default: the dev-chosen one, else the model's)")
    parser.add_argument("--index", choices=("threads", "messages"), default="threads", help="threads (default): a source's threads, indexed on first use; messages: the message_index asset (every message of every source, ANN)")
    args = parser.parse_args(argv)
    if args.k < 1 or args.messages < 1:
        parser.error("--k and --messages must be at least 1")
    if args.index == "messages":
        return _search_message_index(args, parser)

    if args.corpus:
        text, _ = prepare_text(pd.read_parquet(args.corpus), TextSettings())
        name = Path(args.corpus).stem
    else:
        path = storage.data_dir() / "text" / f"{args.source}.parquet"
        if not path.is_file():
            parser.error(f"{path} does not exist: materialise {args.source}/text first, or pass --corpus")
        text, name = pd.read_parquet(path), args.source
    documents = thread_documents(text, None if args.split == "all" else args.split)
    model_path = args.model or _default_model()
    overrides = {k: v for k, v in (("dim", args.dim),) if v is not None}
    if args.weight is not None:
        from thread_embed_pipeline.models import load_sentence_model

        retriever = HybridRetriever(load_sentence_model(model_path, device="cpu"), weight=args.weight, **overrides)
    else:
        retriever = HybridRetriever.from_checkpoint(model_path, device="cpu", **overrides)
    model_id = model_fingerprint(model_path) if Path(model_path).is_dir() else model_path
    log = lambda message: print(message, file=sys.stderr)  # noqa: E731 - results on stdout, progress on stderr
    embeddings, message_embeddings = load_or_build_index(index_path(name, args.split), documents, retriever, model_id=model_id, log=log)
    retriever.index(documents["text"].tolist(), embeddings, messages=documents["messages"].tolist(), message_embeddings=message_embeddings)
    query, _ = redact_text(args.query)
    for rank, hit in enumerate(retriever.hits(query, k=args.k), start=1):
        doc = documents.iloc[hit.document]
        print(f"{rank}. {doc['conversation_id']}  (score {hit.score:.3f}, {doc['n_messages']} messages, {doc['split']})")
        for j, line in enumerate(messages_to_read(doc["messages"], query, args.messages, first=hit.message)):
            marker = "  > " if j == 0 and hit.message is not None else "    "  # the message that matched
            print(f"   {marker}{line[:200]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
