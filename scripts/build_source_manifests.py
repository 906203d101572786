#!/usr/bin/env python
"""Write thread_embed_pipeline/sources/manifests/<source>.json from a local dataset mirror.

    python scripts/build_source_manifests.py --mirror /path/to/datasets

Each manifest lists the source's files (path relative to the source's mirror folder, raw GitHub
URL pinned to the upstream commit, size, sha256), sorted by path. Only relative paths and public
URLs are written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from thread_embed_pipeline.sources.registry import MANIFEST_DIR, SOURCES  # noqa: E402
from thread_embed_pipeline.versioning import file_fingerprint  # noqa: E402

IRC = ("jkkummerfeld/irc-disentanglement", "82ed04f9627a45d0d6f2ec3c8683c88eb408a0d5")
SLACK = (
    "preethac/Software-related-Slack-Chats-with-Disentangled-Conversations",
    "880441597fe2109a87b4db928d2f3e026e06e246",
)
DISCO = ("comacrae/disco-reader", "387064cc067761be2a2ec430c8c2e123616ccaba")
CODI = ("USIREVEAL/CODI", "dd13be13a73fb2a073442c750186a923257c657b")

# source -> (primary upstream, [(glob under the mirror folder, upstream, upstream path prefix to
# put in front of the path relative to the glob's base, glob base)])
LAYOUT: dict[str, tuple[tuple[str, str], list[tuple[str, tuple[str, str], str, str]]]] = {
    "irc_disentangle": (
        IRC,
        [
            ("data/*/*.ascii.txt", IRC, "", ""),
            ("data/*/*.annotation.txt", IRC, "", ""),
        ],
    ),
    "slack_dev_chats": (SLACK, [("data/*/*/*.xml", SLACK, "", "")]),
    "discord_disco": (
        DISCO,
        [
            ("data/*/*/*.xml.out", DISCO, "", ""),
            ("codi-annot/*.annot", CODI, "datasets/annot/from_previous_papers/", "codi-annot/"),
        ],
    ),
}


def build_manifest(name: str, mirror: Path) -> dict:
    spec = SOURCES[name]
    (repo, commit), patterns = LAYOUT[name]
    root = mirror / spec.mirror_subdir
    if not root.is_dir():
        raise SystemExit(f"mirror folder {root} for {name} does not exist")
    files = []
    others = []
    for pattern, (up_repo, up_commit), up_prefix, base in patterns:
        matched = sorted(root.glob(pattern))
        if not matched:
            raise SystemExit(f"{name}: no files match {pattern} under {root}")
        if (up_repo, up_commit) != (repo, commit) and {"repo": up_repo, "commit": up_commit} not in others:
            others.append({"repo": up_repo, "commit": up_commit})
        for path in matched:
            rel = path.relative_to(root).as_posix()
            upstream_path = up_prefix + rel[len(base) :]
            files.append(
                {
                    "path": rel,
                    "url": f"https://raw.githubusercontent.com/{up_repo}/{up_commit}/{upstream_path}",
                    "size": path.stat().st_size,
                    "sha256": file_fingerprint(path),
                }
            )
    files.sort(key=lambda f: f["path"])
    manifest = {"source": name, "upstream": {"repo": repo, "commit": commit}}
    if others:
        manifest["other_upstreams"] = others
    manifest["files"] = files
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mirror", type=Path, required=True, help="folder holding the per-source mirror folders")
    ap.add_argument("--out", type=Path, default=MANIFEST_DIR, help="where to write <source>.json")
    ap.add_argument("--source", action="append", choices=list(LAYOUT), help="only these sources")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.source or list(LAYOUT):
        manifest = build_manifest(name, args.mirror)
        out = args.out / f"{name}.json"
        out.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        total = sum(f["size"] for f in manifest["files"])
        print(f"{name}: {len(manifest['files'])} files, {total} bytes -> {out.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
