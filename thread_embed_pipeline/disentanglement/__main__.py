"""``python -m thread_embed_pipeline.disentanglement``: see :mod:`thread_embed_pipeline.disentanglement.cli`."""

from thread_embed_pipeline.disentanglement.cli import main

raise SystemExit(main())
