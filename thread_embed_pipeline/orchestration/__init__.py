"""The Dagster layer: thin assets that call one work function each and attach metadata."""
