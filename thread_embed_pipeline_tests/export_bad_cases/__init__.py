"""Bad user exports, one module per format, each with ``BAD_CASES: dict[case name, {relative path: bytes}]``.

``bad_input_cases.CASES`` gathers them with the mirrored sources' cases; a case's files are written under
its own folder, and the format's test reads that folder (or the one file in it) as the export."""

from __future__ import annotations

import importlib
import pkgutil


def export_cases() -> dict[str, dict[str, bytes]]:
    cases: dict[str, dict[str, bytes]] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, files in module.BAD_CASES.items():
            if name in cases:
                raise ValueError(f"bad-input case {name!r} is defined twice")
            cases[name] = files
    return cases
