"""Scale benchmark of the streamed ubuntu_irc chain: raw -> corpus (-> pairs) on synthetic channel-day logs.

    python benchmarks/ubuntu_irc_scale.py --messages 1000000 5000000 --write docs/streaming_benchmark.md

For each size, a synthetic log in common-pile/ubuntu_irc's real layout is generated first
(``v0/documents/NNNNN_ubuntu.jsonl.gz`` shards of Dolma rows: id, text, created, metadata; lines
``[HH:MM] <nick> message``, ~30% of them addressed to a recent speaker, actions and ``===`` status
lines mixed in), then a fresh Python process runs the project's own code on it --
``resolve_files`` (mirror), ``write_raw_stream`` and ``build_corpus_stream``, then
``build_pairs_stream`` on a 2% conversation sample -- and reports messages/s for parsing + corpus
and the process's peak RSS (``ru_maxrss``). Generation time is not counted. Not a test: numbers
depend on the machine; they are recorded in docs/.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = (
    "sudo apt-get install update upgrade kernel grub boot partition mount ntfs fstab driver nvidia wifi "
    "network manager xorg gnome kde unity terminal package repository ppa dpkg error broken dependency "
    "how do i fix it works now thanks try reboot check log dmesg syslog permission denied chmod chown "
    "user root password ssh server apache mysql python compile make gcc library version release lts"
).split()


def generate(folder: Path, messages: int, *, docs_per_shard: int = 2000, lines_per_doc: int = 500, seed: int = 0) -> dict:
    """Write ``messages`` chat lines (plus ~2% status lines) as channel-day documents; returns counts."""
    rng = random.Random(seed)
    out = folder / "hf" / "common-pile__ubuntu_irc" / "v0" / "documents"
    out.mkdir(parents=True, exist_ok=True)
    written = docs = shard = 0
    nicks = [f"user{i}" for i in range(400)]
    handle = None
    while written < messages:
        if docs % docs_per_shard == 0:
            if handle:
                handle.close()
            handle = gzip.open(out / f"{shard:05d}_ubuntu.jsonl.gz", "wt", encoding="utf-8", compresslevel=1)
            shard += 1
        n = min(lines_per_doc, messages - written)
        day = f"20{10 + docs % 10:02d}-{1 + docs % 12:02d}-{1 + docs % 28:02d}"
        channel = f"ubuntu-{docs % 7}"
        lines, recent = [], []
        minute = 0
        for i in range(n):
            minute = min(1439, minute + (1 if rng.random() < 0.35 else 0))
            nick = rng.choice(nicks[:60]) if rng.random() < 0.7 else rng.choice(nicks)
            body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14)))
            if recent and rng.random() < 0.3:
                body = f"{rng.choice(recent)}: {body}"
            if rng.random() < 0.03:
                lines.append(f"[{minute // 60:02d}:{minute % 60:02d}]  * {nick} {body}")
            else:
                lines.append(f"[{minute // 60:02d}:{minute % 60:02d}] <{nick}> {body}")
            if rng.random() < 0.02:
                lines.append(f"=== {nick} is now known as {nick}_")
            recent = (recent + [nick])[-8:]
        doc = {
            "id": f"{day}-#{channel}",
            "text": "\n".join(lines) + "\n",
            "source": "ubuntu-chat",
            "added": "2024-01-12T19:40:10",
            "created": day,
            "metadata": {"license": "Public Domain", "authors": [], "url": "", "channel": f"#{channel}"},
        }
        handle.write(json.dumps(doc) + "\n")
        written += n
        docs += 1
    if handle:
        handle.close()
    return {"messages": written, "documents": docs, "shards": shard}


def run_chain(mirror: Path, work: Path) -> dict:
    """Runs in a fresh process: the project's streaming code on the generated mirror."""
    import resource

    from thread_embed_pipeline.sources.hf import Sampling, resolve_files
    from thread_embed_pipeline.sources.hf_registry import HF_SOURCES
    from thread_embed_pipeline.corpus.streaming import build_corpus_stream
    from thread_embed_pipeline.pairs.streaming import build_pairs_stream
    from thread_embed_pipeline.sources.raw_stream import write_raw_stream

    spec = HF_SOURCES["ubuntu_irc"]
    sampling = Sampling()  # everything
    quiet = lambda m: None  # noqa: E731
    t0 = time.perf_counter()
    resolved = resolve_files("ubuntu_irc", spec.dataset, mirror_subdir=spec.mirror_subdir, mirror_dir=mirror, cache_dir=work, sampling=sampling, log=quiet)
    raw_stats = write_raw_stream(spec, resolved.root, resolved.paths, sampling, work / "raw.parquet", log=quiet)
    t1 = time.perf_counter()
    corpus = build_corpus_stream(work / "raw.parquet", work / "corpus.parquet", source="ubuntu_irc", platform="irc", log=quiet)
    t2 = time.perf_counter()
    rss_corpus_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pairs, pair_stats = build_pairs_stream(work / "corpus.parquet", seed=13, conversation_fraction=0.02, hard_negatives=False, log=quiet)
    t3 = time.perf_counter()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    chat_lines = raw_stats["by_record_type"].get("message", 0)
    return {
        "raw_rows": raw_stats["read"],
        "chat_messages": chat_lines,
        "corpus_messages": corpus["kept"],
        "conversations": sum(corpus["conversations"].values()),
        "raw_s": round(t1 - t0, 2),
        "corpus_s": round(t2 - t1, 2),
        "parse_plus_corpus_msgs_per_s": round(raw_stats["read"] / (t2 - t0)),
        "pairs_s": round(t3 - t2, 2),
        "pairs": len(pairs),
        "conversations_sampled": pair_stats["conversations_sampled"],
        "peak_rss_raw_corpus_mb": round(rss_corpus_mb),
        "peak_rss_mb": round(rss_mb),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder)")
    parser.add_argument("--write", type=Path, default=None, help="markdown file for the results")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_chain(Path(args.child[0]), Path(args.child[1]))))
        return 0

    rows = []
    with tempfile.TemporaryDirectory(dir=args.work) as scratch:
        for n in args.messages:
            mirror = Path(scratch) / f"mirror_{n}"
            work = Path(scratch) / f"work_{n}"
            work.mkdir(parents=True)
            t = time.perf_counter()
            gen = generate(mirror, n)
            print(f"generated {gen} in {time.perf_counter() - t:.0f} s", flush=True)
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            done = subprocess.run([sys.executable, __file__, "--child", str(mirror), str(work)], capture_output=True, text=True, env=env)
            if done.returncode:
                print(done.stderr, file=sys.stderr)
                return done.returncode
            result = {"messages_generated": n, **gen, **json.loads(done.stdout.strip().splitlines()[-1])}
            print(result, flush=True)
            rows.append(result)
            for p in work.glob("*.parquet"):
                p.unlink()
    md = render(rows)
    print(md)
    if args.write:
        args.write.write_text(md, encoding="utf-8")
    return 0


def render(rows: list[dict]) -> str:
    import pandas as pd

    cols = ["messages_generated", "documents", "shards", "raw_rows", "corpus_messages", "conversations", "raw_s", "corpus_s", "parse_plus_corpus_msgs_per_s", "peak_rss_raw_corpus_mb", "peak_rss_mb", "pairs_s", "conversations_sampled", "pairs"]
    table = pd.DataFrame(rows)[cols].astype(object).to_markdown(index=False)
    return (
        "# Streaming benchmark: ubuntu_irc raw → corpus → pairs\n\n"
        "Command: `python benchmarks/ubuntu_irc_scale.py --messages "
        + " ".join(str(r["messages_generated"]) for r in rows)
        + " --write docs/streaming_benchmark.md`\n\n"
        f"{table}\n\n"
        "- `raw_rows`: chat lines + status lines read (`===` lines become `system` rows, dropped by the corpus stage and counted).\n"
        "- `parse_plus_corpus_msgs_per_s` = raw_rows / (raw_s + corpus_s). `peak_rss_raw_corpus_mb`: the process's peak resident memory\n"
        "  (ru_maxrss) after raw and corpus; `peak_rss_mb`: after pairs too (the sampled pairs are held in memory: they grow with the sample).\n"
        "- The generator's nicks are random, so the heuristic finds ~0.6 conversations per message (real logs: fewer, longer ones);\n"
        "  parsing and corpus cost depend on messages, not conversations.\n"
        "- Pairs are built for a seeded 2% conversation sample (`conversation_fraction=0.02`), as a GPU-scale run samples them.\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())
