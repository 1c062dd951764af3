"""Runs one experiment config over seeds and variants: `infocam-reproduce` from a checkout
(infocam_jax.cli.reproduce; flags: --help)."""
from absl import app

from infocam_jax.cli.reproduce import main

if __name__ == "__main__":
    app.run(main)
