"""Rebuild only what changed: observed upstream sources, data versions, the automation condition.

* ``<source>/upstream`` is an observable source asset: observing it hashes the (path, size, mtime)
  of the source's files in the mirror -- or, without a mirror, its pinned upstream revision -- into
  a data version, without reading the files. Every ``<source>/raw`` depends on it.
* Every materialised asset reports a data version (``versioned_output``: a hash of what it wrote)
  and a code version (``versioning.code_version``).
* ``UPDATE_ON_CHANGE``: an asset is requested when one of its dependencies' *data version* changed
  (not when it was merely rematerialised with the same content) or its own code version changed,
  since it was last requested or materialised, none of its dependencies was never materialised, and
  nothing it depends on is in progress.
* The streamed sources' raw assets have no automation condition: those sources are opt-in (their
  mirror folder or the Hub must be there), so they are refreshed by their ``refresh_<source>`` jobs;
  their corpus and pairs follow their raw asset as usual.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from thread_embed_pipeline.orchestration.keys import upstream_key
from thread_embed_pipeline.orchestration.resources import ChatSourcesResource
from thread_embed_pipeline.sources.catalog import Source
from thread_embed_pipeline.versioning import files_fingerprint, value_fingerprint

AC = dg.AutomationCondition

def update_on_change(optional_deps: dg.AssetSelection | None = None) -> dg.AutomationCondition:
    """The project's automation condition; ``optional_deps`` may be missing (never materialised)
    without holding the asset back (``training_pairs``' streamed sources)."""
    missing = AC.any_deps_missing() if optional_deps is None else AC.any_deps_match(AC.missing()).ignore(optional_deps)
    return (
        (AC.any_deps_match(AC.data_version_changed()) | AC.code_version_changed()).since_last_handled().with_label("upstream data or own code changed")
        & ~missing
        & ~AC.in_progress()
        & ~AC.any_deps_in_progress()
    ).with_label("update on changed data or code")


UPDATE_ON_CHANGE = update_on_change()


def versioned_output(value) -> dg.Output:
    """``dg.Output`` of ``value`` whose data version is a hash of its content."""
    return dg.Output(value, data_version=dg.DataVersion(value_fingerprint(value)))


def observe_source(spec: Source, chat_sources: ChatSourcesResource) -> tuple[str, dict]:
    """(data version, metadata) of a source as it is now, without parsing it. A user export is hashed by
    content (``ExportTree.fingerprint``): a re-export with the same messages keeps its version."""
    if spec.kind == "export":
        if not spec.path.exists():
            return f"missing:{spec.path}", {"origin": "user export", "note": f"the export {spec.path} does not exist"}
        digest, stats = spec.tree().fingerprint()
        return digest, {"origin": "user export", "files": stats["files"], "bytes": stats["bytes"], "missing": 0, "revision": f"{spec.format} ({stats['kind']})"}
    mirror = chat_sources.mirror_path()
    if mirror is None:
        return spec.upstream_ref, {"origin": spec.origin_without_mirror}
    root = Path(mirror) / spec.mirror_subdir
    if not root.is_dir():
        return f"missing:{spec.mirror_subdir}", {"origin": "mirror", "note": f"mirror folder {root} does not exist"}
    digest, stats = files_fingerprint(root, spec.mirror_files(root, chat_sources.max_files_per_folder))
    revision = spec.upstream_ref.rpartition("@")[2]
    return digest, {"origin": "mirror", **stats, "revision": f"{revision} (the upstream revision the mirror copies)"}


def observation_metadata(version: str, meta: dict) -> dict:
    """What an observation shows on the ``<source>/upstream`` page: origin, files, bytes, newest mtime, revision."""
    hashed = meta.get("origin") in ("mirror", "user export")
    out: dict = {"origin": meta.get("origin", "unknown"), "data_version": version[:16] if hashed else version}
    if not hashed or "files" not in meta:
        if "note" in meta:
            out["note"] = meta["note"]
        if "@" in version:
            out["revision"] = version.rpartition("@")[2]
        return out
    out.update({"files": int(meta["files"]), "bytes": int(meta["bytes"]), "missing_files": int(meta["missing"]), "revision": str(meta.get("revision", ""))})
    if meta.get("newest_mtime") is not None:
        out["newest_mtime"] = dg.MetadataValue.timestamp(float(meta["newest_mtime"]))
    return out


def build_upstream_asset(spec: Source) -> dg.SourceAsset:
    @dg.observable_source_asset(
        key=upstream_key(spec.name),
        group_name=spec.name,
        description=(
            f"Your export {spec.upstream_ref}; observing hashes its content (a re-export with the same messages changes nothing)."
            if spec.kind == "export"
            else f"The files of {spec.name} as they are upstream / in the mirror; observing hashes their paths, sizes and mtimes."
        ),
    )
    def upstream(context, chat_sources: ChatSourcesResource) -> dg.ObserveResult:
        version, meta = observe_source(spec, chat_sources)
        context.log.info(f"{spec.name}: data version {version[:16]} ({meta})")
        return dg.ObserveResult(data_version=dg.DataVersion(version), metadata=observation_metadata(version, meta))

    return upstream
