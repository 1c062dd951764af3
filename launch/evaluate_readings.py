"""Reads saved runs under both normalisations of the maps: `infocam-evaluate-readings`
from a checkout (infocam_jax.cli.evaluate_readings; flags: --help)."""
from absl import app

from infocam_jax.cli.evaluate_readings import main

if __name__ == "__main__":
    app.run(main)
