"""PxAP of the ground-truth class maps on mask datasets (OpenImages30k through wsol_metadata).

One cached, pmapped step per (settings, model, device count): forward pass -> the maps of every
``settings.map_kinds`` for the ground-truth class -> score maps (``settings.normalize``) ->
``masks.PixelCounts`` per kind over ``settings.box_thresholds``. Counters stay on device and are
summed over devices and processes on the host (``devices.sum_devices``); padded examples count
nothing. Batches need ``mask`` and ``ignore`` bool ``[B, H, W]`` (``data.wsol_metadata`` with a
mask size, docs/interfaces.md).

Results (:func:`finalize`): ``{kind}/pxap`` (threshold-free, Choe et al. CVPR 2020). Beside it
the protocol's threshold chosen on held-out data: pixel IoU ``tp / (positives + fp)`` at every
grid threshold (:func:`piou_curve`); :func:`select` picks the threshold on validation and reads
test there (``thresholds.select``): ``{kind}/piou/valsel``, ``.../valsel_threshold``,
``.../best_test``.
"""
from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from infocam_jax import devices
from infocam_jax.evaluation import backends, forward, step, thresholds
from infocam_jax.metrics import pxap
from infocam_jax.devices import Batch
from infocam_jax.evaluation.settings import EvalSettings

REQUIRED_KEYS = ("image", "label", "mask", "ignore", "valid")


def _check(settings: EvalSettings) -> None:
    if settings.multi_label:
        raise ValueError("PxAP is a single-label protocol (mask datasets): got multi_label=True")


def init_counts(settings: EvalSettings) -> pxap.PixelCounts:
    """Zero ``PixelCounts`` with a leading map-kind axis (``[kinds, T + 2]``)."""
    _check(settings)
    empty = pxap.PixelCounts.empty(settings.box_thresholds)
    n = len(settings.map_kinds)
    return empty.replace(positive=jnp.zeros((n,) + empty.positive.shape, jnp.int32),
                         negative=jnp.zeros((n,) + empty.negative.shape, jnp.int32))


def pxap_step(settings: EvalSettings, model, kernel_fn, variables, batch, counts):
    """Per-device step: adds one batch's pixel histograms (every map kind) to ``counts``."""
    backends.check_model_settings(settings, model)
    labels = batch["label"].astype(jnp.int32)
    _, readout = backends.forward_readout(model, variables, batch["image"], labels,
                                          kernel_fn=kernel_fn)
    maps = forward.readout_class_maps(settings.map_kinds, readout, labels,
                                      region_size=settings.region_size)
    sm = forward.stacked_scoremaps(settings, jnp.stack([maps[k] for k in settings.map_kinds]))
    foreground = batch["mask"].astype(bool)
    ignore = batch["ignore"].astype(bool) & ~foreground
    per_kind = [pxap.pixel_counts(sm[i], foreground, ignore, counts.thresholds, batch["valid"])
                for i in range(len(settings.map_kinds))]
    return counts.replace(positive=counts.positive + jnp.stack([c.positive for c in per_kind]),
                          negative=counts.negative + jnp.stack([c.negative for c in per_kind]))


@functools.lru_cache(maxsize=16)
def _make_step(settings, model, num_devices, kernel_fn):
    step = functools.partial(pxap_step, settings, model, kernel_fn)
    return jax.pmap(step, axis_name="batch", devices=jax.local_devices()[:num_devices],
                    donate_argnums=(2,))


def evaluate_counts(settings: EvalSettings, model, variables, iterator: Iterable[Batch], *,
                    num_devices: int | None = None, kernel_fn=None,
                    max_batches: int | None = None) -> pxap.PixelCounts:
    """Summed ``PixelCounts`` (leading map-kind axis, int64 on the host) of ``iterator``.

    Each host batch is checked before it goes to the device (``step.check_batch`` with
    ``REQUIRED_KEYS``): ``image [b, H, W, C]`` with ``(H, W) = settings.image_size``,
    ``label`` integer in ``[0, M)`` and ``mask`` / ``ignore`` 0/1 ``[b, H, W]`` on the real
    examples, ``valid`` 0/1 ``[b]``. The score maps are made on device from the model and
    normalised there (``settings.normalize``), so they are in ``[0, 1]`` by construction.

    Raises:
      ValueError: a batch without ``mask`` / ``ignore`` (not a mask dataset), or one that fails
        ``step.check_batch`` (the message starts with its index in the iterator, names the key,
        the first offending index and its value).
    """
    _check(settings)
    num_devices = devices.check_num_devices(num_devices)
    p_step = _make_step(settings, model, num_devices, kernel_fn or backends.default_kernel_fn())
    p_variables = devices.replicate(variables, num_devices)
    p_counts = devices.replicate(init_counts(settings), num_devices)
    size = None
    for i, batch in enumerate(itertools.islice(iterator, max_batches)):
        missing = [k for k in REQUIRED_KEYS if k not in batch]
        if missing:
            raise ValueError(f"PxAP batch is missing keys {missing}: a mask dataset "
                             "(config.dataset='wsol_metadata' with masks, square image_size, "
                             "eval_protocol='resize') gives them")
        try:
            step.check_batch(batch, settings, REQUIRED_KEYS)
        except ValueError as err:
            raise ValueError(f"batch {i} of the iterator: {err}") from None
        b = len(batch["valid"])
        size = size or -(-b // num_devices) * num_devices
        if b > size:
            raise ValueError(f"batch {i} has {b} examples, more than the first batch's {size}")
        p_counts = p_step(p_variables, devices.shard(batch, num_devices, size), p_counts)
    summed = jax.tree_util.tree_map(lambda x: np.asarray(x, np.int64),
                                    devices.sum_devices(p_counts))
    return summed


def piou_curve(counts: pxap.PixelCounts, index: int) -> np.ndarray:
    """Pixel IoU of kind ``index`` at every grid threshold, float64 ``[T]``:
    ``tp_t / (positives + fp_t)`` with ``tp_t`` / ``fp_t`` the pixels scoring ``>= t_t``."""
    pos = np.asarray(counts.positive[index], np.float64)
    neg = np.asarray(counts.negative[index], np.float64)
    tp = np.cumsum(pos[::-1])[::-1][:len(counts.thresholds)]
    fp = np.cumsum(neg[::-1])[::-1][:len(counts.thresholds)]
    with np.errstate(divide="ignore", invalid="ignore"):
        return tp / (pos.sum() + fp)


def finalize(settings: EvalSettings, counts: pxap.PixelCounts) -> dict[str, float]:
    """``{kind}/pxap`` of the summed counts (NaN when no foreground pixel was counted)."""
    out = {}
    for i, kind in enumerate(settings.map_kinds):
        try:
            out[f"{kind}/pxap"] = pxap.average_precision(counts.positive[i],
                                                          counts.negative[i])
        except ValueError:
            out[f"{kind}/pxap"] = float("nan")
    return out


def select(settings: EvalSettings, validation: pxap.PixelCounts,
           test: pxap.PixelCounts) -> dict[str, float]:
    """Pixel-IoU threshold chosen on ``validation``, read on ``test`` (``thresholds.select``):
    ``{kind}/piou/valsel``, ``/valsel_threshold``, ``/valsel_validation``, ``/best_test``,
    ``/best_threshold``."""
    grid = settings.box_thresholds
    return thresholds.flat_selection({
        kind: {"piou": thresholds.select(grid, piou_curve(validation, i), piou_curve(test, i))}
        for i, kind in enumerate(settings.map_kinds)})


def evaluate(settings: EvalSettings, model, variables, splits: Mapping[str, Any], *,
             num_devices: int | None = None, max_batches: int | None = None
             ) -> dict[str, dict[str, float]]:
    """PxAP of every split of ``splits`` (``{split: iterable of batches}``), and, with both
    ``validation`` and ``test``, the pixel-IoU threshold selection under ``"test"``.

    Returns:
      ``{split: {kind}/pxap ...}``; ``test`` also holds the :func:`select` keys.
    """
    counts = {split: evaluate_counts(settings, model, variables, batches,
                                     num_devices=num_devices, max_batches=max_batches)
              for split, batches in splits.items()}
    out = {split: finalize(settings, c) for split, c in counts.items()}
    if "validation" in counts and "test" in counts:
        out["test"].update(select(settings, counts["validation"], counts["test"]))
    return out
