"""``python -m thread_embed_pipeline.evaluation``: see :mod:`thread_embed_pipeline.evaluation.cli`."""

from thread_embed_pipeline.evaluation.cli import main

raise SystemExit(main())
