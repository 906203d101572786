"""Content fingerprints (what an asset wrote, what a source holds) and the stages' code versions.

A stage's data version is a hash of its output's content, so rebuilding an asset that comes out the
same changes nothing downstream; a stage's code version is bumped by hand whenever its logic changes
what it writes, so every asset of that stage (and, as their outputs change, everything below) is
rebuilt. Both are read by the automation condition in ``orchestration/automation.py``.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa

from thread_embed_pipeline.storage import atomic_write_text

# Bump the version of a stage when its code changes its output (e.g. a parser fix, a new pair rule).
# ``test_versioning`` holds each stage to it: it hashes the stage's code (STAGE_CODE, comments and
# docstrings left out) and compares it with the hash recorded in code_versions.json for this version;
# after a bump, ``python -m thread_embed_pipeline.versioning --record`` records the new hash.
CODE_VERSIONS: dict[str, str] = {
    "raw": "8",  # (v2: catches up with parser changes made before the guard test; v3: helpers in sources/parsing.py; v4: every source written by the one raw stream writer, same rows; v5: raw pieces carry reader counts, same rows; v6: user exports: sources/user.py and one reader per export format, same rows for the project's sources; v7: schemas.py changed (eval set messages), same output; v8: modules moved into stage packages (0.6), same output)
    "corpus": "7",  # (v2: catches up with corpus changes made before the guard test; v3: one Arrow builder and stream writer for every source; streamed pieces sorted by conversation_id; v4: record types bot/edit/deleted, same rows for the mirrored sources; v5: conversation splits hashed in DuckDB, the same splits; an optional link step; v6: schemas.py changed (eval set messages), same output; v7: modules moved into stage packages (0.6), same output)
    "text": "5",  # pseudonyms, mentions, redaction, bot and short-conversation drops (v2: schemas.py changed, same rows; v3: a mention of anyone, participant or not, becomes a pseudonym; v4: schemas.py changed, same rows; v5: schemas.py changed (eval set messages), same output)
    "pairs": "7",  # (v2: built from text/<source>; v3: message spans of both sides, hard negatives found by span; every source through build_pairs_stream; v4: the text stage pseudonymises every mention; v5: schemas.py changed, same pairs; v6: schemas.py changed (eval set messages), same output; v7: modules moved into stage packages (0.6), same output)
    "eval_sets": "7",  # (v2: protocols, dev split; v3: schemas.py changed, same rows; v4: the text stage pseudonymises every mention; v5: schemas.py changed, same rows; v6: documents keep their messages; pseudonymised protocol only by default; the speaker_free view; v7: modules moved into stage packages (0.6), same output)
    "training_pairs": "3",  # (v2: the span columns travel with each pair; v3: modules moved into stage packages (0.6), same output)
    "model": "7",  # (v2: time budget; v3: the negative column named in schemas, same training; v4: load_sentence_model also loads ONNX files, same training; v5: launched through Dagster Pipes, DDP with nproc_per_node > 1, the value gains processes / candidates_per_anchor / resumed_from_step; 1 process trains as before; v6: speaker_dropout (default 0: the same training); v7: modules moved into stage packages (0.6), same output)
    "release": "3",  # the release folder: checkpoint, card as README.md, hybrid weight (v2: the ONNX files and their card section; v3: modules moved into stage packages (0.6), same output)
    "onnx": "3",  # model_onnx: torch.onnx export, ORT fusions, per-channel dynamic int8 (v2: TorchScript export of eager attention, fused Attention nodes, int8 attention weights; v3: modules moved into stage packages (0.6), same output)
    "search_index": "7",  # search_index/<source>: the threads embedded by the released model (v2: schemas.py changed, same index; v3: schemas.py changed, same index; v4: message embeddings beside the threads, max-sim retriever; v5: encodes through the eval's embedding cache, same index; v6: search.py gained --index messages, same index; v7: modules moved into stage packages (0.6), same output)
    "message_index": "3",  # message_index: every message in LanceDB with an ANN index, updated incrementally (v2: what built it in the table's schema metadata, a URI location; v3: modules moved into stage packages (0.6), same output)
    "disentanglement": "6",  # disentanglement/<variant>: the link scorer, its links and metrics; disentanglement/comparison (v3: the text stage pseudonymises every mention; v4: link_export_timelines for user exports, same scorer and links; v5: schemas.py changed (eval set messages), same output; v6: modules moved into stage packages (0.6), same output)
    "eval_report": "11",  # (v2: dev-tuned score fusion; v3: the model card and hybrid weight in data/reports/; v4: search.py gained the chat-search CLI, same numbers; v5: ONNX variants and embedding precisions; v6: platforms of user sources, the note on predicted labels; same numbers; v7: max-sim rows and hybrids, aggregation chosen on dev, token-budget encoding batches; v8: max-sim rows only on the thread tasks, not response: dev prefers the windows as one text; v9: onnx_export.py changed (fused attention), same numbers; v10: search.py gained --index messages, same numbers; v11: modules moved into stage packages (0.6), same output)
}

# the user-export package: its shared modules and one reader per format (sources/exports/formats.py)
EXPORT_MODULES = ("tree", "rows", "formats", "slack", "discord", "telegram", "matrix", "zulip", "mattermost", "irc_log")

# The modules (relative to the package) whose code decides what each stage writes.
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "raw": (
        "sources/annot.py", "sources/chat_xml.py", "sources/irc.py", "sources/parsing.py", "sources/hf.py", "sources/hf_parsers.py", "sources/registry.py",
        "sources/hf_registry.py", "sources/catalog.py", "sources/user.py", *(f"sources/exports/{m}.py" for m in EXPORT_MODULES), "sources/raw_stream.py", "schemas.py",
    ),
    "corpus": ("corpus/builder.py", "corpus/streaming.py", "schemas.py"),
    "text": ("text/prepare.py", "text/redact.py", "text/settings.py", "text/speakers.py", "schemas.py"),  # text/audit.py only counts
    "pairs": ("pairs/builders.py", "pairs/hard_negatives.py", "pairs/streaming.py", "schemas.py", "text/prepare.py", "text/redact.py", "text/speakers.py"),
    "eval_sets": ("evaluation/eval_sets.py", *(f"evaluation/tasks/{m}.py" for m in ("common", "thread", "response", "concurrent")), "evaluation/external.py", "schemas.py", "text/prepare.py", "text/redact.py", "text/speakers.py"),
    "training_pairs": ("pairs/builders.py",),
    "model": ("training/settings.py", "training/trainer.py", "training/budget.py", "training/inputs.py", "training/batching.py", "training/launch.py", "models.py"),
    "release": ("release/hub.py",),
    "onnx": ("release/onnx.py", "models.py"),
    "search_index": ("search/retriever.py", "schemas.py"),
    "message_index": ("search/message_index.py", "schemas.py"),
    "disentanglement": (
        "disentanglement/logs.py", "disentanglement/features.py", "disentanglement/scorers.py", "disentanglement/linking.py", "disentanglement/metrics.py",
        "text/prepare.py", "text/redact.py", "text/speakers.py", "schemas.py",
    ),
    "eval_report": (
        "evaluation/runner.py", "evaluation/retrieval.py", "evaluation/pools.py", "evaluation/fusion.py", "evaluation/metrics.py", "evaluation/statistics.py",
        "evaluation/report.py", "evaluation/embedders.py", "evaluation/api_embedders.py", "evaluation/precision.py", "release/card.py", "release/published_report.py",
        "search/retriever.py", "release/onnx.py", "models.py",
    ),
}

RECORD_FILE = Path(__file__).with_name("code_versions.json")


def _code_without_docs(source: str) -> str:
    """The module's syntax tree as text, without comments and docstrings: what the code does."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


def stage_code_hash(stage: str) -> str:
    """sha256 over the code of the stage's modules (:data:`STAGE_CODE`), docs and comments left out."""
    root = Path(__file__).parent
    h = hashlib.sha256()
    for rel in sorted(STAGE_CODE[stage]):
        h.update(rel.encode() + b"\0" + _code_without_docs((root / rel).read_text(encoding="utf-8")).encode() + b"\n")
    return h.hexdigest()


def recorded_code_versions(path: Path = RECORD_FILE) -> dict[str, dict[str, str]]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def stale_code_versions(recorded: dict[str, dict[str, str]] | None = None) -> list[str]:
    """One line per stage whose code changed while its version did not (the guard test's failures)."""
    recorded = recorded_code_versions() if recorded is None else recorded
    problems = []
    for stage, version in CODE_VERSIONS.items():
        entry, current = recorded.get(stage), stage_code_hash(stage)
        if entry is None:
            problems.append(f"{stage}: no recorded hash; run python -m thread_embed_pipeline.versioning --record")
        elif entry["sha256"] != current and entry["version"] == version:
            problems.append(f"{stage}: its code changed ({', '.join(STAGE_CODE[stage])}) but CODE_VERSIONS[{stage!r}] is still {version!r}: bump it if the output can change, then --record")
        elif entry["version"] != version or entry["sha256"] != current:
            problems.append(f"{stage}: version {version!r} is not recorded yet; run python -m thread_embed_pipeline.versioning --record")
    return problems


def record_code_versions(path: Path = RECORD_FILE) -> dict[str, dict[str, str]]:
    """Record each stage's version and code hash; refuses a changed hash under an unchanged version."""
    recorded = recorded_code_versions(path)
    refused = [stage for stage, version in CODE_VERSIONS.items() if stage in recorded and recorded[stage]["version"] == version and recorded[stage]["sha256"] != stage_code_hash(stage)]
    if refused:
        raise SystemExit(f"code changed without a version bump: {', '.join(refused)} (bump CODE_VERSIONS first)")
    out = {stage: {"version": version, "sha256": stage_code_hash(stage)} for stage, version in CODE_VERSIONS.items()}
    atomic_write_text(path, json.dumps(out, indent=2, sort_keys=True) + "\n")
    return out


CHUNK = 1 << 20


def code_version(stage: str) -> str:
    return f"{stage}-v{CODE_VERSIONS[stage]}"


def frame_fingerprint(frame: pd.DataFrame) -> str:
    """sha256 of the frame's Arrow IPC serialisation: same columns, dtypes and values -> same hash."""
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue()).hexdigest()


def file_fingerprint(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def files_content_fingerprint(paths: Iterable[Path]) -> str:
    """sha256 over the names and contents of several files (a checkpoint's weights)."""
    h = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        h.update(path.name.encode() + b"\0" + file_fingerprint(path).encode())
    return h.hexdigest()


def files_fingerprint(root: Path, rel_paths: Iterable[str]) -> tuple[str, dict]:
    """A cheap fingerprint of a folder's files (path, size, mtime): what a refresh looks at to decide
    whether a source changed without reading it. Returns (hash, {"files", "bytes", "missing",
    "newest_mtime"}), the last as seconds since the epoch (None without files)."""
    h = hashlib.sha256()
    files = total = missing = 0
    newest: float | None = None
    for rel in sorted(rel_paths):
        path = Path(root) / rel
        try:
            st = path.stat()
        except FileNotFoundError:
            missing += 1
            h.update(f"{rel}\0missing\n".encode())
            continue
        files += 1
        total += st.st_size
        newest = st.st_mtime if newest is None else max(newest, st.st_mtime)
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest(), {"files": files, "bytes": total, "missing": missing, "newest_mtime": newest}


def value_fingerprint(value) -> str:
    """Data version of an asset value: a DataFrame's content, a (Parquet) file's bytes, or a JSON summary's text."""
    if isinstance(value, dict):
        return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode("utf-8")).hexdigest()
    if isinstance(value, pd.DataFrame):
        return frame_fingerprint(value)
    if isinstance(value, Path):
        return file_fingerprint(value)
    raise TypeError(f"no fingerprint for {type(value).__name__}")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--record"]:
        problems = stale_code_versions()
        print("\n".join(problems) or "every stage's code matches its recorded version")
        raise SystemExit(1 if problems else 0)
    print(json.dumps(record_code_versions(), indent=2))
