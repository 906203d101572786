"""``python -m thread_embed_pipeline.search``: see :mod:`thread_embed_pipeline.search.cli`."""

from thread_embed_pipeline.search.cli import main

raise SystemExit(main())
