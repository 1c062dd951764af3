"""Experiment drivers over seeds and variants, their readings, tables and figures."""
