"""IO manager: one Parquet file per DataFrame asset (JSON for small dict assets), DuckDB views on top.

Out-of-core assets return the ``Path`` of a Parquet file they streamed; it is moved into place, and
a consumer that annotates its input as ``Path`` gets the stored file's path instead of a DataFrame.

Files live at ``<data dir>/<storage path>.parquet`` (``storage.data_dir()``: ``data/`` or ``THREAD_EMBED_DATA_DIR``): the asset key's path, except that a source's
stages (keys ``<source>/<stage>``) are stored stage-first, ``<data dir>/corpus/<source>.parquet``,
so that one stage's files sit together and the layout of earlier releases stays valid. Every write goes to a temporary file that is
renamed into place, so a killed run leaves the previous version intact. After each write the
DuckDB database ``<data dir>/warehouse.duckdb`` gets a view named after the asset key
(``corpus__irc_disentangle``, ``training_pairs``...) so every stage can be queried with SQL.
"""


import json
import os
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pyarrow.parquet as pq

from thread_embed_pipeline import storage
from thread_embed_pipeline.storage import atomic_write_bytes
from thread_embed_pipeline.orchestration.keys import stage_first

WAREHOUSE_FILE = "warehouse.duckdb"


def view_name(key_path: list[str]) -> str:
    return "__".join(key_path)


def replace_tables(db_path: Path, frames: dict[str, pd.DataFrame]) -> None:
    """Create or replace several DuckDB tables in one transaction: all of them or none."""
    with duckdb.connect(str(db_path)) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            for table, frame in frames.items():
                con.register("frame", frame)
                con.execute(f'CREATE OR REPLACE TABLE "{table}" AS SELECT * FROM frame')
                con.unregister("frame")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


def refresh_view(base_dir: Path, name: str, parquet_path: Path) -> None:
    with duckdb.connect(str(base_dir / WAREHOUSE_FILE)) as con:
        literal = str(parquet_path).replace("'", "''")  # DDL takes no bound parameters
        con.execute(f"CREATE OR REPLACE VIEW \"{name}\" AS SELECT * FROM read_parquet('{literal}')")


class ParquetIOManager(dg.ConfigurableIOManager):
    """Parquet per DataFrame asset, JSON per dict asset, in the data folder (storage.data_dir(): data/ or
    THREAD_EMBED_DATA_DIR, the one setting every asset's side files use too); per-source stages stored
    stage-first (data/corpus/<source>.parquet)."""

    # for optional inputs (streamed sources' pairs): an input loads as the stored file's Path, read
    # only if the consumer needs it, and as None when the asset was never materialised
    optional_paths: bool = False

    def _base(self) -> Path:
        return storage.data_dir()

    def _path(self, key: dg.AssetKey, suffix: str) -> Path:
        return self._base().joinpath(*stage_first(key.path)).with_suffix(suffix)

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if obj is None:
            return
        key = context.asset_key
        if isinstance(obj, pd.DataFrame):
            path = self._path(key, ".parquet")
            atomic_write_bytes(path, lambda tmp: obj.to_parquet(tmp, index=False))
            refresh_view(self._base(), view_name(stage_first(key.path)), path)
            context.add_output_metadata({"path": dg.MetadataValue.path(str(path)), "rows": len(obj)})
        elif isinstance(obj, Path):
            # a Parquet file an asset wrote out of core: moved into place (atomically when the
            # staging file is on the same file system, else copied beside the target first)
            if obj.suffix != ".parquet" or not obj.is_file():
                raise TypeError(f"{key.to_user_string()}: a Path output must be an existing .parquet file, got {obj}")
            path = self._path(key, ".parquet")
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(obj, path)
            except OSError:
                atomic_write_bytes(path, lambda tmp: shutil.copyfile(obj, tmp))
                obj.unlink(missing_ok=True)
            refresh_view(self._base(), view_name(stage_first(key.path)), path)
            meta = pq.ParquetFile(path).metadata
            context.add_output_metadata(
                {"path": dg.MetadataValue.path(str(path)), "rows": meta.num_rows, "row_groups": meta.num_row_groups, "bytes": path.stat().st_size}
            )
        elif isinstance(obj, dict):
            path = self._path(key, ".json")
            atomic_write_bytes(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str)))
            context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})
        else:
            raise TypeError(f"ParquetIOManager stores DataFrames and dicts, got {type(obj).__name__} for {key.to_user_string()}")

    def load_input(self, context: dg.InputContext):
        key = context.asset_key
        parquet, js = self._path(key, ".parquet"), self._path(key, ".json")
        if parquet.exists():
            if self.optional_paths or _wants_path(context):
                return parquet  # out-of-core consumers stream the file themselves
            return pd.read_parquet(parquet)
        if js.exists():
            return json.loads(js.read_text())
        if self.optional_paths:
            return None
        raise FileNotFoundError(f"asset {key.to_user_string()} has not been materialised yet (no {parquet.name} or {js.name} under {parquet.parent})")


def _wants_path(context: dg.InputContext) -> bool:
    """True when the consuming asset annotates the input as ``Path`` (it streams the Parquet file)."""
    dagster_type = getattr(context, "dagster_type", None)
    return getattr(dagster_type, "typing_type", None) is Path
