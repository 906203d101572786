"""Small helpers that turn work-module results into Dagster metadata."""
from __future__ import annotations


import base64
from pathlib import Path

import dagster as dg
import pandas as pd


def accounting_metadata(accounting: dict) -> dict:
    """``read``, ``kept`` and one ``dropped/<reason>`` entry per reason (read = kept + dropped)."""
    meta: dict = {"read": int(accounting["read"]), "kept": int(accounting["kept"])}
    dropped = accounting.get("dropped", {})
    meta["dropped_total"] = int(sum(dropped.values()))
    for reason, count in sorted(dropped.items()):
        meta[f"dropped/{reason}"] = int(count)
    return meta


def table_md(frame: pd.DataFrame, max_rows: int = 20) -> dg.MetadataValue:
    shown = frame.head(max_rows).copy()
    for column in shown.columns:
        if shown[column].dtype == object:
            shown[column] = shown[column].map(lambda v: (str(v)[:120] + "…") if isinstance(v, str) and len(v) > 120 else v)
    return dg.MetadataValue.md(shown.to_markdown(index=False))


def png_md(path: Path, title: str) -> dg.MetadataValue:
    """A PNG embedded in markdown metadata, so the Dagster UI shows the picture itself."""
    encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")
