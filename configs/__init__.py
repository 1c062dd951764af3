"""Experiment configs (ml_collections files with `get_config()`), one per experiment."""
