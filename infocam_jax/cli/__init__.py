"""The commands (``[project.scripts]`` in pyproject.toml), one module each with its ``main``.

``infocam-train`` (:mod:`.train`), ``infocam-evaluate`` (:mod:`.evaluate`), ``infocam-scoremaps``
(:mod:`.scoremaps`, JAX-free on its host engine), ``infocam-reproduce`` (:mod:`.reproduce`),
``infocam-visualize`` (:mod:`.visualize`), ``infocam-convert-weights``
(:mod:`.convert_weights`) and ``infocam-evaluate-readings`` (:mod:`.evaluate_readings`).
``launch/*.py`` are one-line wrappers of the same functions. Each absl command module defines its
flags at import, so import one command per process. This file imports nothing.
"""
