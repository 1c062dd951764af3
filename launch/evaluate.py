"""Evaluates a trained workdir: `infocam-evaluate` from a checkout
(infocam_jax.cli.evaluate; flags: --help)."""
from absl import app

from infocam_jax.cli.evaluate import main

if __name__ == "__main__":
    app.run(main)
