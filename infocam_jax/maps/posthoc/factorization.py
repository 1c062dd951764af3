"""Deep Feature Factorization (Collins et al., ECCV 2018, "Deep feature factorization for
concept discovery", §3): non-negative matrix factorisation of a layer's activations.

As pytorch-grad-cam's ``dff``: the activations of the whole batch, ``A [B, h, w, K]``, become
``X [K, B·h·w]`` (NaN -> 0), each channel's minimum is subtracted (``X - o``, ``o [K]``) so that
``X >= 0``, and ``X - o ≈ W H`` with ``W [K, n] >= 0``, ``H [n, B·h·w] >= 0``. The concepts are
``W + o`` (a channel vector per concept, in the layer's units) and the concept maps are the rows
of ``H``, ``[B, n, h, w]``: one heat map per concept and image, not one map per target, so DFF
is not a WSOL map kind and is not registered (call it directly). Class-agnostic.

The NMF is scikit-learn's (``NMF(solver="cd")``, Frobenius loss, no regularisation, the
peer's call): :func:`nmf`, the same coordinate descent in ``lax`` loops.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from infocam_jax.maps.posthoc import core, perturbation
from infocam_jax.maps.posthoc.core import DEFAULT_LAYER, HIGHEST

NMF_MAX_ITER = 200
NMF_TOL = 1e-4
DFF_COMPONENTS = 16


def _cd_pass(x, w, ht):
    """One pass of coordinate descent over the columns of ``w`` (sklearn's
    ``_update_coordinate_descent``): ``x [n, m] ≈ w [n, r] ht[m, r]^T``. Column ``t`` is the
    exact non-negative minimiser given the others (all rows at once: they are independent).

    Returns ``(w, violation)``, the violation summing ``|projected gradient|`` before each
    update."""
    hht = jnp.dot(ht.T, ht, precision=HIGHEST)
    xht = jnp.dot(x, ht, precision=HIGHEST)

    def column(t, carry):
        w, violation = carry
        grad = jnp.dot(w, hht[:, t], precision=HIGHEST) - xht[:, t]
        projected = jnp.where(w[:, t] == 0, jnp.minimum(grad, 0.0), grad)
        hess = hht[t, t]
        step = jnp.maximum(w[:, t] - grad / jnp.where(hess != 0, hess, 1.0), 0.0)
        w = w.at[:, t].set(jnp.where(hess != 0, step, w[:, t]))
        return w, violation + jnp.sum(jnp.abs(projected))

    return lax.fori_loop(0, w.shape[1], column, (w, jnp.zeros((), x.dtype)))


def nmf(x, w, h, *, max_iter: int = NMF_MAX_ITER, tol: float = NMF_TOL):
    """Non-negative matrix factorisation ``x ≈ w h`` by coordinate descent from ``(w, h)``.

    scikit-learn's ``NMF(init="custom", solver="cd", beta_loss="frobenius")`` (Hsieh & Dhillon,
    KDD 2011; Cichocki & Phan 2009): each iteration updates every column of ``w``, then every
    row of ``h``; it stops after ``max_iter`` iterations or once the violation (summed absolute
    projected gradients) falls to ``tol`` times the first iteration's.

    Args:
      x: float ``[n, m] >= 0``.
      w: float ``[n, r] >= 0``, h: float ``[r, m] >= 0``: the initial factors.
      max_iter: static int >= 1; tol: float >= 0.

    Returns:
      ``(w [n, r], h [r, m], n_iter)``.
    """
    x, w, h = (jnp.asarray(v, jnp.float32) for v in (x, w, h))

    def body(state):
        it, w, ht, first, _ = state
        w, v_w = _cd_pass(x, w, ht)
        ht, v_h = _cd_pass(x.T, ht, w)
        violation = v_w + v_h
        first = jnp.where(it == 0, violation, first)
        done = (first == 0) | (violation / jnp.where(first == 0, 1.0, first) <= tol)
        return it + 1, w, ht, first, done

    state = (jnp.zeros((), jnp.int32), w, h.T, jnp.zeros((), jnp.float32), jnp.array(False))
    it, w, ht, _, _ = lax.while_loop(lambda s: (s[0] < max_iter) & ~s[4], body, state)
    return w, ht.T, it


def random_init(x, n_components: int, key):
    """scikit-learn's ``init="random"`` scheme with a JAX key: ``|N(0, 1)| · sqrt(mean(x)/r)``
    for ``h [r, m]`` then ``w [n, r]`` (the values differ from NumPy's generator)."""
    avg = jnp.sqrt(jnp.mean(x) / n_components)
    key_h, key_w = jax.random.split(key)
    h = avg * jnp.abs(jax.random.normal(key_h, (n_components, x.shape[1]), jnp.float32))
    w = avg * jnp.abs(jax.random.normal(key_w, (x.shape[0], n_components), jnp.float32))
    return w, h


def dff_matrix(activation):
    """``A [B, h, w, K]`` -> ``(X - o [K, B·h·w] >= 0, o [K])`` (module docstring)."""
    x = jnp.moveaxis(jnp.nan_to_num(activation.astype(jnp.float32), nan=0.0), -1, 0)
    x = x.reshape(x.shape[0], -1)
    offset = jnp.min(x, axis=-1)
    return x - offset[:, None], offset


def _check_components(n_components) -> int:
    if isinstance(n_components, (bool, np.bool_)) or not isinstance(n_components,
                                                                    (int, np.integer)) \
            or n_components < 1:
        raise ValueError(f"n_components must be a Python int >= 1 (static), got "
                         f"{n_components!r}")
    return int(n_components)


def deep_feature_factorization(model, variables, images, *, layer: str = DEFAULT_LAYER,
                               n_components: int = DFF_COMPONENTS, key=0, init=None,
                               max_iter: int = NMF_MAX_ITER, tol: float = NMF_TOL):
    """Deep Feature Factorization of ``images``' activations at ``layer`` (module docstring).

    Args:
      model, variables, images, layer: as :func:`gradcam` (no targets: class-agnostic).
      n_components: static int >= 1, the number of concepts ``n`` (peer default 16).
      key: int seed or typed PRNG key of :func:`random_init` (ignored with ``init``).
      init: optional ``(W0 [K, n], H0 [n, B·h·w])`` initial factors (e.g. scikit-learn's own
        random init, to reproduce the peer).
      max_iter, tol: of :func:`nmf` (scikit-learn's defaults 200, 1e-4).

    Returns:
      ``(concepts [K, n], maps [B, n, h, w])``, float32; the whole batch is factorised jointly.

    Raises:
      ValueError: bad ``images``, ``layer``, ``n_components``, ``key``, or ``init`` shapes.
    """
    core.check_model(model)
    images = core.check_images(images)
    layer = core.check_layer(layer)
    n_components = _check_components(n_components)
    _, activation = core.forward_at_layer(model, variables, images, layer)
    batch, h, w, k = activation.shape
    x, offset = dff_matrix(activation)
    if init is None:
        w0, h0 = random_init(x, n_components, perturbation.as_key(key))
    else:
        w0, h0 = (jnp.asarray(v, jnp.float32) for v in init)
        if w0.shape != (k, n_components) or h0.shape != (n_components, batch * h * w):
            raise ValueError(f"init must be (W0 [K, n], H0 [n, B·h·w]) = "
                             f"({(k, n_components)}, {(n_components, batch * h * w)}), got "
                             f"({w0.shape}, {h0.shape})")
    factors, codes, _ = nmf(x, w0, h0, max_iter=max_iter, tol=tol)
    maps = jnp.moveaxis(codes.reshape(n_components, batch, h, w), 0, 1)
    return factors + offset[:, None], maps
