"""Converts a torchvision state dict into infocam-jax variables: `infocam-convert-weights`
from a checkout (infocam_jax.cli.convert_weights; flags: --help)."""
from absl import app

from infocam_jax.cli.convert_weights import main

if __name__ == "__main__":
    app.run(main)
