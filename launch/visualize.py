"""Draws a PNG grid of maps from a trained workdir: `infocam-visualize` from a checkout
(infocam_jax.cli.visualize; flags: --help)."""
from absl import app

from infocam_jax.cli.visualize import main

if __name__ == "__main__":
    app.run(main)
