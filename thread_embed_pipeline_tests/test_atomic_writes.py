"""Writes are atomic: a materialisation killed mid-write leaves the previous version intact, and a
rerun is idempotent. The kill is real: a child process materialises a source chain and is sent
SIGKILL while its IO manager is half-way through writing a Parquet file."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pandas as pd

from thread_embed_pipeline.orchestration.io import replace_tables

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import dagster as dg
    import pandas as pd
    from thread_embed_pipeline.orchestration.source_chain import build_source_chain
    from thread_embed_pipeline.orchestration.io import ParquetIOManager
    from thread_embed_pipeline.orchestration.resources import ChatSourcesResource
    from thread_embed_pipeline.sources.registry import SOURCES

    data, mirror, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "stall":
        real = pd.DataFrame.to_parquet
        def stalled(self, path, *a, **k):
            real(self, path, *a, **k)
            with open(path, "r+b") as f:  # leave a half-written file behind, then hang
                f.truncate(f.seek(0, 2) // 2)
            print("WRITING", path, flush=True)
            time.sleep(600)
        pd.DataFrame.to_parquet = stalled
    assets = build_source_chain(SOURCES["slack_dev_chats"])
    os.environ["THREAD_EMBED_DATA_DIR"] = data
    result = dg.materialize(
        assets,
        resources={"io_manager": ParquetIOManager(), "chat_sources": ChatSourcesResource(mirror_dir=mirror, max_files_per_folder=1)},
        selection=dg.AssetSelection.assets(*[a.key for a in assets]),
    )
    print("OK" if result.success else "FAILED", flush=True)
    """
)


def _child(tmp_path: Path, data: Path, mirror: Path, mode: str) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, str(script), str(data), str(mirror), mode], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)


def test_killed_materialisation_leaves_previous_version_and_rerun_is_idempotent(tmp_path, mirror_root):
    data = tmp_path / "data"
    first = _child(tmp_path, data, mirror_root, "clean")
    assert first.communicate(timeout=300)[0].strip().endswith("OK")
    files = {name: data / name / "slack_dev_chats.parquet" for name in ("raw", "corpus", "pairs")}
    before = {name: path.read_bytes() for name, path in files.items()}

    victim = _child(tmp_path, data, mirror_root, "stall")
    line = ""
    deadline = time.time() + 300
    while "WRITING" not in line and time.time() < deadline:
        line = victim.stdout.readline()
    assert "WRITING" in line, "the child never reached the write"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)

    half_written = Path(line.split()[1])
    assert half_written.exists() and half_written.name.endswith(".tmp")  # the kill hit mid-write
    assert {name: path.read_bytes() for name, path in files.items()} == before  # previous versions intact
    assert len(pd.read_parquet(files["raw"])) > 0
    with duckdb.connect(str(data / "warehouse.duckdb")) as con:
        assert con.execute('SELECT count(*) FROM "raw__slack_dev_chats"').fetchone()[0] == len(pd.read_parquet(files["raw"]))

    rerun = _child(tmp_path, data, mirror_root, "clean")
    assert rerun.communicate(timeout=300)[0].strip().endswith("OK")
    for name, path in files.items():  # idempotent: the rerun writes the same rows
        pd.testing.assert_frame_equal(pd.read_parquet(path), pd.read_parquet(io.BytesIO(before[name])))
    assert not half_written.exists()  # the stale temp file was cleaned up by the next write


def test_duckdb_tables_are_replaced_all_or_none(tmp_path):
    db = tmp_path / "w.duckdb"
    replace_tables(db, {"a": pd.DataFrame({"x": [1]}), "b": pd.DataFrame({"y": [2]})})

    class Boom:  # not a DataFrame: the second CREATE fails mid-transaction
        pass

    try:
        replace_tables(db, {"a": pd.DataFrame({"x": [10, 11]}), "b": Boom()})
    except Exception:
        pass
    else:  # pragma: no cover - the failure is the point
        raise AssertionError("replace_tables should have failed")
    with duckdb.connect(str(db)) as con:
        assert con.execute("SELECT x FROM a").fetchall() == [(1,)]  # the first table rolled back too
        assert con.execute("SELECT y FROM b").fetchall() == [(2,)]
