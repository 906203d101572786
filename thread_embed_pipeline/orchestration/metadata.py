"""Small helpers that turn work-module results into Dagster metadata.

Tables become ``TableMetadataValue`` with a schema (rendered inline on the asset page); Markdown is
kept for previews and embedded plots; texts in previews are one line each (newlines as ``⏎``) and cut.
"""
from __future__ import annotations


import base64
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

PREVIEW_CHARS = 120
NEWLINE_MARK = " ⏎ "


def accounting_metadata(accounting: dict) -> dict:
    """``read``, ``kept`` and one ``dropped/<reason>`` entry per reason (read = kept + dropped)."""
    meta: dict = {"read": int(accounting["read"]), "kept": int(accounting["kept"])}
    dropped = accounting.get("dropped", {})
    meta["dropped_total"] = int(sum(dropped.values()))
    for reason, count in sorted(dropped.items()):
        meta[f"dropped/{reason}"] = int(count)
    return meta


def preview_text(value, limit: int = PREVIEW_CHARS, markdown: bool = True):
    """One line (newlines as ``⏎``; for Markdown tables ``|`` escaped), at most ``limit`` characters plus ``…``."""
    if not isinstance(value, str):
        return value
    line = value.replace("\r\n", "\n").replace("\n", NEWLINE_MARK)
    if markdown:
        line = line.replace("|", "\\|")
    return line[:limit] + "…" if len(line) > limit else line


def table_md(frame: pd.DataFrame, max_rows: int = 20, limit: int = PREVIEW_CHARS) -> dg.MetadataValue:
    """A Markdown preview: one row per record, every text column cut to ``limit`` and on one line."""
    shown = frame.head(max_rows).copy()
    for column in shown.columns:
        if not pd.api.types.is_numeric_dtype(shown[column]) and not pd.api.types.is_bool_dtype(shown[column]):
            shown[column] = shown[column].map(lambda v: preview_text(v, limit))
    return dg.MetadataValue.md(shown.to_markdown(index=False))


def _column_type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int"
    if pd.api.types.is_float_dtype(series):
        return "float"
    return "string"


def _cell(value, kind: str, digits: int):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if kind == "bool":
        return bool(value)
    if kind == "int":
        return int(value)
    if kind == "float":
        return round(float(value), digits)
    return preview_text(str(value), markdown=False)  # a table cell, not Markdown


def table(frame: pd.DataFrame, max_rows: int = 200, digits: int = 4) -> dg.MetadataValue:
    """``frame`` as table metadata with a schema (the Dagster UI renders it inline); floats rounded."""
    shown = frame.head(max_rows)
    kinds = {c: _column_type(shown[c]) for c in shown.columns}
    schema = dg.TableSchema(columns=[dg.TableColumn(str(c), kinds[c]) for c in shown.columns])
    records = [dg.TableRecord({str(c): _cell(v, kinds[c], digits) for c, v in row.items()}) for row in shown.to_dict("records")]
    return dg.MetadataValue.table(records=records, schema=schema)


def png_md(path: Path, title: str) -> dg.MetadataValue:
    """A PNG embedded in markdown metadata, so the Dagster UI shows the picture itself."""
    encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")
