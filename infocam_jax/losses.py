"""Classification losses: softmax CE, PC-softmax, sigmoid BCE and PC-sigmoid.

Every loss returns the (optionally weighted) mean over the batch of a per-example loss:

    loss = Σ_b v_b ℓ_b / Σ_b v_b        (0 when Σ_b v_b = 0)

where ``v = weights`` (``[B]`` float >= 0 or bool validity mask; all ones when omitted), so
padded examples with weight 0 contribute nothing. All are written in log-sum-exp form, finite
with finite gradients for logits of any magnitude (tested at |n| ~ 1e4).

Probability-corrected (PC) softmax (Qin, Kim & Gedeon, "Rethinking softmax with
cross-entropy", 2019) reweights the softmax by the training-set class priors ``p(y)``:

    q(y | x) = exp(n_y) / Σ_{y'} p(y') exp(n_{y'})      (= p(y|x) / p(y) of the model)

    ℓ_PC(x, y) = -log q(y|x) = -n_y + logsumexp_{y'}(n_{y'} + log p(y')).

Value checks (labels in range, priors in range, targets in [0, 1]) run only on concrete
values; under ``jit`` they cannot run. There, an out-of-range integer label gives a NaN loss
(never a silently wrong finite number).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from infocam_jax import _checks

__all__ = [
    "LOSSES",
    "estimate_priors",
    "loss",
    "pc_sigmoid_binary_cross_entropy",
    "pc_softmax_cross_entropy",
    "per_example_loss",
    "sigmoid_binary_cross_entropy",
    "softmax_cross_entropy",
]

LOSSES = ("softmax", "pc_softmax", "sigmoid", "pc_sigmoid")


_is_concrete = _checks.is_concrete


def _check_logits(logits):
    logits = jnp.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape [B, M] (rank 2), got shape {logits.shape}")
    return logits.astype(jnp.float32)


def _check_labels(labels, logits):
    return _checks.check_labels(labels, logits.shape[0], logits.shape[1],
                                classes_from="M = logits.shape[1]")


def _check_targets(targets, logits):
    targets = jnp.asarray(targets)
    if targets.shape != logits.shape:
        raise ValueError(
            f"targets must have shape [B, M] = {logits.shape} (multi-hot), got shape "
            f"{targets.shape}")
    targets = targets.astype(jnp.float32)
    if _is_concrete(targets) and targets.size:
        values = np.asarray(targets)
        if not np.all((values >= 0) & (values <= 1)):
            raise ValueError(
                f"targets must lie in [0, 1], got values in [{np.nanmin(values)}, "
                f"{np.nanmax(values)}]")
    return targets


def _check_priors(priors, num_classes: int, binary: bool):
    priors = jnp.asarray(priors)
    if priors.shape != (num_classes,):
        raise ValueError(
            f"priors must have shape [M] = ({num_classes},), got shape {priors.shape}")
    if _is_concrete(priors):
        values = np.asarray(priors, np.float64)
        ok = (values > 0) & (values < 1) if binary else (values > 0) & np.isfinite(values)
        if not np.all(ok):
            expected = "(0, 1)" if binary else "(0, inf)"
            raise ValueError(
                f"priors must lie in {expected}, got values in [{values.min()}, "
                f"{values.max()}] (use estimate_priors(..., floor=...) for unseen classes)")
    return priors.astype(jnp.float32)


def _weighted_mean(per_example, weights):
    if weights is None:
        return jnp.mean(per_example)
    weights = jnp.asarray(weights)
    if weights.shape != per_example.shape:
        raise ValueError(
            f"weights must have shape [B] = {per_example.shape}, got shape {weights.shape}")
    weights = weights.astype(jnp.float32)
    if _is_concrete(weights) and weights.size and np.min(np.asarray(weights)) < 0:
        raise ValueError("weights must be >= 0")
    total = jnp.sum(weights)
    # Masked-out examples may hold NaN/inf (padding): select, don't multiply.
    summed = jnp.sum(jnp.where(weights > 0, weights * per_example, 0.0))
    return jnp.where(total > 0, summed / jnp.where(total > 0, total, 1.0), 0.0)


def _pick(values, labels):
    """``values[b, labels[b]]``; NaN for out-of-range labels (possible only under jit)."""
    num_classes = values.shape[1]
    safe = jnp.where((labels >= 0) & (labels < num_classes), labels, num_classes)
    return jnp.take_along_axis(values, safe[:, None], axis=1, mode="fill",
                               fill_value=jnp.nan)[:, 0]


def _reduce_labels(per_label, label_reduction: str):
    if label_reduction == "mean":
        return jnp.mean(per_label, axis=1)
    if label_reduction == "sum":
        return jnp.sum(per_label, axis=1)
    raise ValueError(f"label_reduction must be 'mean' or 'sum', got {label_reduction!r}")


# --------------------------------------------------------------------------------------------
# Single-label losses
# --------------------------------------------------------------------------------------------
def _softmax_ce_per_example(logits, labels):
    return jax.nn.logsumexp(logits, axis=1) - _pick(logits, labels)


def _pc_softmax_ce_per_example(logits, labels, priors):
    shifted = logits + jnp.log(priors)[None, :]
    return jax.nn.logsumexp(shifted, axis=1) - _pick(logits, labels)


def softmax_cross_entropy(logits, labels, weights=None):
    """Softmax cross-entropy ``ℓ = -n_y + logsumexp_{y'} n_{y'}``, weighted batch mean.

    Args:
      logits: float ``[B, M]``.
      labels: int ``[B]`` in ``[0, M)``.
      weights: optional ``[B]`` float >= 0 or bool validity mask.

    Returns:
      float32 scalar.
    """
    logits = _check_logits(logits)
    labels = _check_labels(labels, logits)
    return _weighted_mean(_softmax_ce_per_example(logits, labels), weights)


def pc_softmax_cross_entropy(logits, labels, priors, weights=None):
    """PC-softmax cross-entropy ``ℓ = -log[exp(n_y) / Σ_{y'} p(y') exp(n_{y'})]``.

    Computed as ``-n_y + logsumexp(n + log p)``. The priors need not sum to one (a common
    scale only shifts the loss by a constant). With uniform priors ``p = 1/M`` it equals
    softmax CE minus ``log M``.

    Args:
      logits: float ``[B, M]``.
      labels: int ``[B]`` in ``[0, M)``.
      priors: float ``[M]``, > 0 (class frequencies, see :func:`estimate_priors`).
      weights: optional ``[B]`` float >= 0 or bool validity mask.

    Returns:
      float32 scalar.
    """
    logits = _check_logits(logits)
    labels = _check_labels(labels, logits)
    priors = _check_priors(priors, logits.shape[1], binary=False)
    return _weighted_mean(_pc_softmax_ce_per_example(logits, labels, priors), weights)


# --------------------------------------------------------------------------------------------
# Multi-label losses
# --------------------------------------------------------------------------------------------
def _sigmoid_bce_per_label(logits, targets):
    # -t log σ(n) - (1-t) log(1-σ(n)) = softplus(n) - t n
    return jax.nn.softplus(logits) - targets * logits


def _pc_sigmoid_per_label(logits, targets, priors):
    log_pi = jnp.log(priors)[None, :]
    log_not_pi = jnp.log1p(-priors)[None, :]
    return jnp.logaddexp(logits + log_pi, log_not_pi) - targets * logits


def sigmoid_binary_cross_entropy(logits, targets, weights=None, label_reduction: str = "mean"):
    """Sigmoid binary cross-entropy per label, multi-hot targets.

    ``ℓ_{b,j} = -t log σ(n) - (1-t) log(1-σ(n)) = softplus(n) - t·n`` with ``n = logits[b,j]``,
    ``t = targets[b,j]``; per example the labels are averaged (``label_reduction="mean"``,
    PyTorch ``BCEWithLogitsLoss`` default when unweighted) or summed (``"sum"``), then the
    weighted batch mean is taken.

    Args:
      logits: float ``[B, M]``.
      targets: float ``[B, M]`` in ``[0, 1]`` (multi-hot).
      weights: optional ``[B]`` float >= 0 or bool validity mask.
      label_reduction: ``"mean"`` or ``"sum"`` over the M labels.

    Returns:
      float32 scalar.
    """
    logits = _check_logits(logits)
    targets = _check_targets(targets, logits)
    per_example = _reduce_labels(_sigmoid_bce_per_label(logits, targets), label_reduction)
    return _weighted_mean(per_example, weights)


def pc_sigmoid_binary_cross_entropy(logits, targets, priors, weights=None,
                                    label_reduction: str = "mean"):
    """PC-sigmoid: PC-softmax over the two outcomes of each label.

    Derivation. Label ``j`` has two outcomes: *present* with logit ``n = logits[b, j]`` and
    prior ``π = priors[j]``, *absent* with logit 0 and prior ``1 - π``. PC-softmax over them:

        q(present|x) = e^n / (π e^n + (1-π) e^0),   q(absent|x) = 1 / (π e^n + (1-π)),

    (``q = p(outcome|x) / p(outcome)``), so the cross-entropy with target ``t ∈ [0, 1]`` is

        ℓ = -t log q(present) - (1-t) log q(absent)
          = -t·n + log(π e^n + 1 - π)
          = -t·n + logaddexp(n + log π, log(1 - π)).

    At ``π = 1/2`` it is the sigmoid BCE minus ``log 2``. The prediction rule matching
    PC-softmax at test time (uniform prior) is ``n > 0``.

    Args:
      logits: float ``[B, M]``.
      targets: float ``[B, M]`` in ``[0, 1]`` (multi-hot).
      priors: float ``[M]`` in ``(0, 1)``: frequency of each label being present.
      weights: optional ``[B]`` float >= 0 or bool validity mask.
      label_reduction: ``"mean"`` or ``"sum"`` over the M labels.

    Returns:
      float32 scalar.
    """
    logits = _check_logits(logits)
    targets = _check_targets(targets, logits)
    priors = _check_priors(priors, logits.shape[1], binary=True)
    per_example = _reduce_labels(_pc_sigmoid_per_label(logits, targets, priors),
                                 label_reduction)
    return _weighted_mean(per_example, weights)


# --------------------------------------------------------------------------------------------
# By name
# --------------------------------------------------------------------------------------------
def per_example_loss(name: str, logits, targets, priors=None, label_reduction: str = "mean"):
    """Per-example loss ``[B]`` by name (``LOSSES``); see the functions above for formulas.

    Args:
      name: ``"softmax"``, ``"pc_softmax"`` (``targets`` int ``[B]``), ``"sigmoid"``,
        ``"pc_sigmoid"`` (``targets`` float multi-hot ``[B, M]``).
      logits: float ``[B, M]``.
      targets: labels ``[B]`` or multi-hot ``[B, M]`` as above.
      priors: float ``[M]``, required by the PC losses.
      label_reduction: multi-label losses only, ``"mean"`` or ``"sum"``.

    Returns:
      float32 ``[B]``.
    """
    if name not in LOSSES:
        raise ValueError(f"name must be one of {LOSSES}, got {name!r}")
    if name.startswith("pc_") and priors is None:
        raise ValueError(f"priors ([M] class/label frequencies) are required for loss {name!r}")
    logits = _check_logits(logits)
    if name in ("softmax", "pc_softmax"):
        labels = _check_labels(targets, logits)
        if name == "softmax":
            return _softmax_ce_per_example(logits, labels)
        priors = _check_priors(priors, logits.shape[1], binary=False)
        return _pc_softmax_ce_per_example(logits, labels, priors)
    targets = _check_targets(targets, logits)
    if name == "sigmoid":
        return _reduce_labels(_sigmoid_bce_per_label(logits, targets), label_reduction)
    priors = _check_priors(priors, logits.shape[1], binary=True)
    return _reduce_labels(_pc_sigmoid_per_label(logits, targets, priors), label_reduction)


def loss(name: str, logits, targets, priors=None, weights=None, label_reduction: str = "mean"):
    """Weighted batch mean of :func:`per_example_loss` (float32 scalar)."""
    return _weighted_mean(
        per_example_loss(name, logits, targets, priors, label_reduction), weights)


# --------------------------------------------------------------------------------------------
# Priors
# --------------------------------------------------------------------------------------------
def estimate_priors(labels, num_classes: int | None = None,
                    floor: float | None = None) -> np.ndarray:
    """Class or label frequencies of a training set, for the PC losses (host-side NumPy).

    * int ``labels [N]`` (single-label): ``p(y) = #{i: labels_i = y} / N``, ``[M]`` with
      ``M = num_classes`` (default ``max(labels) + 1``).
    * multi-hot ``labels [N, M]`` (0/1 or bool): ``π_j = #{i: labels_ij > 0.5} / N``.

    A class never seen (or, multi-label, a label present in every example, which makes
    ``1 - π_j = 0``) raises ``ValueError`` unless ``floor`` is given; then the frequencies
    are clipped to ``[floor, ∞)`` (single-label) or ``[floor, 1 - floor]`` (multi-label).
    They are not renormalised (PC-softmax is invariant to a common scale of the priors).

    Args:
      labels: int ``[N]`` or multi-hot ``[N, M]``.
      num_classes: ``M`` for int labels (must exceed every label).
      floor: optional float in ``(0, 0.5)``.

    Returns:
      float64 ``[M]``.
    """
    labels = np.asarray(labels)
    if floor is not None and not 0 < floor < 0.5:
        raise ValueError(f"floor must lie in (0, 0.5), got {floor}")
    if labels.ndim not in (1, 2) or labels.shape[0] == 0:
        raise ValueError(
            f"labels must be int [N] or multi-hot [N, M] with N >= 1, got shape {labels.shape}")
    if labels.ndim == 1:
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels [N] must be integers, got dtype {labels.dtype}")
        if num_classes is None:
            num_classes = int(labels.max()) + 1
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(
                f"labels must lie in [0, {num_classes}), got values in "
                f"[{labels.min()}, {labels.max()}]")
        freq = np.bincount(labels, minlength=num_classes).astype(np.float64) / labels.size
        bad = np.flatnonzero(freq == 0)
        if bad.size and floor is None:
            raise ValueError(
                f"classes {bad.tolist()} never occur in labels: their prior would be 0 "
                f"(pass floor=... to clip)")
        return freq if floor is None else np.maximum(freq, floor)
    if num_classes is not None and labels.shape[1] != num_classes:
        raise ValueError(
            f"labels [N, M] must have M = num_classes = {num_classes}, got shape {labels.shape}")
    freq = np.mean(labels.astype(np.float64) > 0.5, axis=0)
    bad = np.flatnonzero((freq == 0) | (freq == 1))
    if bad.size and floor is None:
        raise ValueError(
            f"labels {bad.tolist()} are never or always present: their prior would be 0 or 1 "
            f"(pass floor=... to clip)")
    return freq if floor is None else np.clip(freq, floor, 1 - floor)
