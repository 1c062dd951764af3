"""WSOL evaluation, one module per job (see docs/interfaces.md "Evaluation").

Import the module you need, e.g. ``from infocam_jax.evaluation import driver``; this file
imports nothing, so adding a module to the package never touches it.
"""
