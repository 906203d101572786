"""Running assets in tests against a data folder of their own."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest


def materialize_in(data_dir: Path | str, *args, **kwargs) -> dg.ExecuteInProcessResult:
    """``dg.materialize`` with the data folder (``THREAD_EMBED_DATA_DIR``) set to ``data_dir``: the IO
    manager and every file an asset writes besides its value (reports, exports, caches) go there."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("THREAD_EMBED_DATA_DIR", str(data_dir))
        return dg.materialize(*args, **kwargs)
