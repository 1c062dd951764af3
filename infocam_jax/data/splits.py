"""The paper's evaluation split: official validation/test images -> validation half + test half.

Qin et al. (section 4): "we evenly split the original validation images to two data piles, one
still used for validation during training and the other acting as the final test dataset".
We split per class (stratified), deterministically from a seed, so every class is represented in
both halves and the split does not depend on the order files were listed in.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

DEFAULT_SPLIT_SEED = 0


def stratified_halves(labels: Sequence[int], seed: int = DEFAULT_SPLIT_SEED):
    """Splits examples into two halves, per class, deterministically.

    Within each class the examples (in the given order, so sort the keys first) are permuted
    with a generator seeded by ``(seed, class)`` and the first half goes to validation. A class
    with an odd count gives its extra example alternately to validation and test (in increasing
    class order), so the two totals differ by at most one.

    Args:
      labels: int [N] class of each example.
      seed: split seed.

    Returns:
      (validation_indices int64 [N_v], test_indices int64 [N_t]), each sorted, disjoint, and
      together covering ``range(N)`` exactly once.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D [N]; got shape {labels.shape}")
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0):
        raise ValueError("labels must be non-negative integers")
    val, test = [], []
    extra_to_val = True
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        perm = idx[np.random.default_rng([int(seed), int(cls)]).permutation(idx.size)]
        n_val = idx.size // 2
        if idx.size % 2:
            n_val += int(extra_to_val)
            extra_to_val = not extra_to_val
        val.append(perm[:n_val])
        test.append(perm[n_val:])
    cat = lambda parts: np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    return cat(val).astype(np.int64), cat(test).astype(np.int64)


def split_keys(keys: Sequence[str], labels: Sequence[int], seed: int = DEFAULT_SPLIT_SEED):
    """:func:`stratified_halves` on examples named by unique keys (order-independent).

    Args:
      keys: unique example names (e.g. image paths).
      labels: class of each key.
      seed: split seed.

    Returns:
      (validation_keys, test_keys): sorted lists.
    """
    keys = list(keys)
    labels = np.asarray(labels)
    if len(keys) != labels.shape[0]:
        raise ValueError(f"keys ({len(keys)}) and labels ({labels.shape[0]}) differ in length")
    if len(set(keys)) != len(keys):
        raise ValueError("keys must be unique")
    order = np.argsort(np.asarray(keys, dtype=object), kind="stable")
    sorted_keys = [keys[i] for i in order]
    val, test = stratified_halves(labels[order], seed)
    return [sorted_keys[i] for i in val], [sorted_keys[i] for i in test]
