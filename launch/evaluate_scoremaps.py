"""Evaluates saved score maps like the reference WSOL evaluation: `infocam-scoremaps` from a
checkout (infocam_jax.cli.scoremaps; flags: --help). JAX-free on its host engine."""
import sys

from infocam_jax.cli.scoremaps import main

if __name__ == "__main__":
    sys.exit(main())
