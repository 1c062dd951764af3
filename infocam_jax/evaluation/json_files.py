"""JSON files of results: NaN / inf written as null, NumPy values as Python ones, sorted keys."""
from __future__ import annotations

import json
import math
import os


def json_clean(x):
    """NaN / inf -> None, NumPy scalars and arrays -> Python values, recursively."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    if isinstance(x, np.ndarray):
        return json_clean(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if isinstance(x, dict):
        return {k: json_clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_clean(v) for v in x]
    return x


def write_json(obj, path: str | os.PathLike) -> str:
    """Writes ``json_clean(obj)`` (sorted keys, indented); creates parent directories."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(json_clean(obj), f, indent=2, sort_keys=True)
    return str(path)


def read_json(path: str | os.PathLike):
    """Reads a file of :func:`write_json`; null numbers stay None (callers map them to NaN)."""
    with open(path) as f:
        return json.load(f)
