"""Trains and evaluates one experiment: `infocam-train` from a checkout
(infocam_jax.cli.train; flags: --help)."""
from absl import app

from infocam_jax.cli.train import main

if __name__ == "__main__":
    app.run(main)
