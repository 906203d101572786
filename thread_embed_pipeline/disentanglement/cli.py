"""The disentangler's CLI: a log in the IRC ``[HH:MM] <nick> text`` form in, its threads out as JSON Lines.

    python -m thread_embed_pipeline.disentanglement path/to/log.txt --scorer data/disentanglement/fine_tuned
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from thread_embed_pipeline.disentanglement.features import file_features
from thread_embed_pipeline.disentanglement.logs import channel_logs, parse_irc_log
from thread_embed_pipeline.disentanglement.scorers import DisentangleScorer
from thread_embed_pipeline.schemas import format_message, is_missing


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m thread_embed_pipeline.disentanglement log.txt``: threads as JSON Lines on stdout."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m thread_embed_pipeline.disentanglement", description="Split an IRC log ('[HH:MM] <nick> text' lines) into threads, as JSON Lines.")
    parser.add_argument("log", type=Path, help="the log file")
    parser.add_argument("--scorer", type=Path, help="a disentanglement asset's folder (default: data/disentanglement/fine_tuned)")
    parser.add_argument("--model", help="the embedding model (default: the one the scorer was trained with)")
    args = parser.parse_args(argv)
    from thread_embed_pipeline import storage
    from thread_embed_pipeline.disentanglement.metrics import clusters_from_links

    folder = args.scorer or storage.data_dir() / "disentanglement" / "fine_tuned"
    try:
        scorer = DisentangleScorer.load(folder)
        logs = channel_logs(parse_irc_log(args.log.read_text(encoding="utf-8", errors="replace")))
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    embed = None
    if scorer.dims:
        from thread_embed_pipeline.evaluation.embedders import load_local_embedder

        spec = args.model or scorer.chosen.get("model")
        if not spec:
            parser.error("the scorer reads embeddings: pass --model")
        embed = load_local_embedder(spec, name="model", device="cpu").embed
    links = scorer.links(file_features(logs, embed, scorer.dims, window=scorer.window)["log"])
    for cluster in clusters_from_links(links, cutoff=0):
        rows = logs.iloc[sorted(cluster)]
        print(json.dumps({"lines": [int(x) + 1 for x in rows["line"]], "messages": [format_message(None if is_missing(s) else s, t or "") for s, t in zip(rows["speaker"], rows["text"])]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
