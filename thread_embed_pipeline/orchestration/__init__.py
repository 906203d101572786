"""The Dagster layer: thin assets that call one work function each and attach metadata.

One module per stage (source chains, training, evaluation, release, search, disentanglement), plus the IO
manager, resources, checks and automation. May import every work package; none of them imports it back.
"""
