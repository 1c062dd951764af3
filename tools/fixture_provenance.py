"""The ``provenance`` entry every reference fixture (tests/fixtures/*.npz) carries: where its
numbers came from. Written by tools/method_parity_fixtures.py and
tools/augment_reference_fixtures.py; read by the tests (``tests/parity.py``:
``provenance``, ``provenance_line``), which print it when a comparison fails.

The entry is a 0-d string array under the key ``"provenance"``: a JSON object with
``repository``, ``commit`` (``git rev-parse HEAD`` of the ``--reference`` checkout), ``torch``,
``numpy``, ``script`` and ``date`` (UTC, ISO 8601).
"""
import datetime
import json
import subprocess

import numpy as np

KEY = "provenance"
REPOSITORY = "https://github.com/clovaai/wsolevaluation"


def reference_commit(path: str) -> str:
    """``git rev-parse HEAD`` of the checkout at ``path``.

    Raises:
      RuntimeError: ``path`` is not a git checkout (a fixture must name its commit).
    """
    try:
        return subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as err:
        raise RuntimeError(f"--reference={path} is not a git checkout: its commit cannot be "
                           f"recorded ({err})") from err


def entry(reference: str, script: str, torch_version: str) -> np.ndarray:
    """The ``provenance`` array of a fixture made now from the checkout at ``reference``."""
    record = {
        "repository": REPOSITORY,
        "commit": reference_commit(reference),
        "torch": torch_version,
        "numpy": np.__version__,
        "script": script,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return np.array(json.dumps(record, sort_keys=True))
