"""Every connected component of every level set of uint8 maps, in one union-find pass.

Internal helper of :mod:`infocam_jax.boxes`. The level sets ``{v > L}`` of an integer map are
nested: processing the pixels once in descending value order with a union-find (Najman-Couprie /
Berger style component tree) visits every component of every level. Each union-find root carries
its component's attributes (bounding box, first pixel in raster order, contour area); whenever a
root's attributes change, the previous state (a "record") is closed and is known to be the state
of that component for the levels ``L`` in ``[v_now, v_created - 1]``. Records are reduced into a
``[256, 256]`` table indexed by (lowest level, highest level) and, after the pass, a 2-D prefix
maximum gives, for every level, the best component alive at that level. The cost is one loop
over the ``H*W`` pixels whatever the number of thresholds.

All functions are written for one map (one "lane") and ``jax.vmap``-ed over a batch of lanes.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

NUM_LEVELS = 256
_TRASH = NUM_LEVELS * NUM_LEVELS          # the table's dump slot for masked scatter writes
# Neighbour order: NW, N, NE, W, E, SW, S, SE.
_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
_DIAGONAL = np.array([dy != 0 and dx != 0 for dy, dx in _OFFSETS])
# The four 2x2 cells around a pixel, as triples of neighbour positions (the pixel is the 4th).
_CELLS = ((0, 1, 3), (1, 2, 4), (3, 5, 6), (4, 6, 7))


@functools.lru_cache(maxsize=16)
def neighbour_table(height: int, width: int) -> np.ndarray:
    """int32 ``[H*W, 8]`` raster indices of the 8 neighbours (NW..SE), -1 outside the image."""
    ys, xs = np.divmod(np.arange(height * width), width)
    table = np.full((height * width, 8), -1, np.int32)
    for k, (dy, dx) in enumerate(_OFFSETS):
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        table[inside, k] = (ny * width + nx)[inside]
    return table


def fill_holes(values):
    """Grayscale hole filling (reconstruction by erosion from the image frame, 4-connected).

    ``g(p)`` is the smallest, over 4-connected paths from outside the image (value 0) to ``p``,
    of the largest value on the path. So ``{g > L}`` is ``{v > L}`` with every background region
    that does not reach the frame (every hole) filled in: its 8-connected components are the
    regions enclosed by the outer contours of the top-level components of ``{v > L}``.

    Args:
      values: int32 ``[B, H, W]``.

    Returns:
      int32 ``[B, H, W]``, ``g >= values``.
    """
    values = jnp.asarray(values, jnp.int32)

    def sweep(g, axis, reverse):
        # g_j = max(v_j, min(g_j, g_{j-1})) along one axis, vectorised over the other two.
        gs, vs = jnp.moveaxis(g, axis, 0), jnp.moveaxis(values, axis, 0)

        def step(prev, gv):
            new = jnp.maximum(gv[1], jnp.minimum(gv[0], prev))
            return new, new

        _, out = lax.scan(step, jnp.zeros_like(gs[0]), (gs, vs), reverse=reverse)
        return jnp.moveaxis(out, 0, axis)

    def round_(g):
        for axis in (2, 1):
            for reverse in (False, True):
                g = sweep(g, axis, reverse)
        return g

    def cond(state):
        return state[1]

    def body(state):
        g, _ = state
        new = round_(g)
        return new, jnp.any(new != g)

    start = jnp.full_like(values, jnp.max(values, initial=0))
    g, _ = lax.while_loop(cond, body, (round_(start), jnp.array(True)))
    return g


def _iou(boxes, gt_boxes, gt_valid):
    """Max over valid GT of the inclusive-pixel IoU. boxes ``[K, 4]`` -> float32 ``[K]``."""
    a = boxes[:, None, :]
    b = gt_boxes[None, :, :]
    iw = jnp.maximum(0, jnp.minimum(a[..., 2], b[..., 2]) - jnp.maximum(a[..., 0], b[..., 0]) + 1)
    ih = jnp.maximum(0, jnp.minimum(a[..., 3], b[..., 3]) - jnp.maximum(a[..., 1], b[..., 1]) + 1)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    iou = inter.astype(jnp.float32) / (area_a + area_b - inter).astype(jnp.float32)
    return jnp.max(jnp.where(gt_valid[None, :], iou, 0.0), axis=1)


def iou_with_gt(boxes, gt_boxes, gt_valid):
    """Max IoU over valid GT boxes: boxes ``[B, T, 4]``, gt ``[B, G, 4]`` -> float32 ``[B, T]``."""
    return jax.vmap(_iou)(boxes, gt_boxes, gt_valid)


def _lane_pass(values, allowed, gt_boxes, gt_valid, is_hole, *, height, width, mode):
    """One union-find pass over one map; see :func:`level_table`."""
    n = height * width
    big = jnp.int32(2**30)
    nbr = jnp.asarray(neighbour_table(height, width))
    keys = (NUM_LEVELS - 1 - values) * n + jnp.arange(n, dtype=jnp.int32)
    order = lax.sort(keys) % n                       # descending value, raster order within
    k8 = jnp.arange(8)

    def fresh(fill):
        return jnp.full((n + 1,), fill, jnp.int32)   # index n is a dump slot

    state = dict(par=fresh(-1), size=fresh(0), first=fresh(0), x0=fresh(0), y0=fresh(0),
                 x1=fresh(0), y1=fresh(0), s2=fresh(0), vlast=fresh(0))
    if mode == "area":
        state["tab"] = (jnp.full((_TRASH + 1,), -1, jnp.int32),) * 4   # s2, first, x0|x1, y0|y1
    else:
        state["tab"] = jnp.full((_TRASH + 1,), -1.0, jnp.float32)

    def emit(tab, cell, live, r, st):
        """Reduce the closing records of roots ``r`` (masked by ``live``) into the table."""
        cell = jnp.where(live, cell, _TRASH)
        if mode == "area":
            ks2, kf = st["s2"][r], st["first"][r]
            better = (ks2[None, :] > ks2[:, None]) | (
                (ks2[None, :] == ks2[:, None]) & (kf[None, :] > kf[:, None]))
            beaten = jnp.any(live[None, :] & (cell[None, :] == cell[:, None]) & better, axis=1)
            t_s2, t_f, t_bx, t_by = tab
            cur_s2, cur_f = t_s2[cell], t_f[cell]
            upd = live & ~beaten & ((ks2 > cur_s2) | ((ks2 == cur_s2) & (kf > cur_f)))
            idx = jnp.where(upd, cell, _TRASH)
            bx = st["x0"][r] | (st["x1"][r] << 16)
            by = st["y0"][r] | (st["y1"][r] << 16)
            return (t_s2.at[idx].set(ks2), t_f.at[idx].set(kf), t_bx.at[idx].set(bx),
                    t_by.at[idx].set(by))
        x0, y0, x1, y1 = st["x0"][r], st["y0"][r], st["x1"][r], st["y1"][r]
        # Hole contours run through the foreground pixels around the hole: one pixel wider.
        grow = is_hole.astype(jnp.int32)
        box = jnp.stack([x0 - grow, y0 - grow,
                         jnp.minimum(x1 + 1 + grow, width - 1),
                         jnp.minimum(y1 + 1 + grow, height - 1)], axis=-1)
        u = _iou(box, gt_boxes, gt_valid)
        frame = (x0 == 0) | (y0 == 0) | (x1 == width - 1) | (y1 == height - 1)
        u = jnp.where(live & ~(is_hole & frame), u, -1.0)
        return tab.at[cell].max(u)

    def body(t, st):
        par = st["par"]
        p = order[t]
        v = values[p]
        py, px = p // width, p % width
        nb = nbr[p]
        nbc = jnp.where(nb >= 0, nb, n)
        proc = (nb >= 0) & (par[nbc] >= 0) & allowed

        def not_root(r):
            return jnp.any(proc & (par[r] != r))

        r = lax.while_loop(not_root, lambda r: jnp.where(proc, par[r], r),
                           jnp.where(proc, par[nbc], n))
        dup = jnp.any((r[None, :] == r[:, None]) & proc[None, :] & (k8[None, :] < k8[:, None]),
                      axis=1)
        valid = proc & ~dup
        rv = jnp.where(valid, r, n)                   # distinct neighbouring roots, else dump
        sizes = jnp.where(valid, st["size"][rv], -1)
        root = jnp.where(jnp.any(valid), rv[jnp.argmax(sizes)], p)

        # Close the records of every root that changes (absorbed or growing).
        hi = st["vlast"][rv] - 1
        live = valid & (v <= hi)
        tab = emit(st["tab"], v * NUM_LEVELS + hi, live, rv, st)

        def merged(name, reduce, combine, own, empty):
            return combine(own, reduce(jnp.where(valid, st[name][rv], empty)))

        new = dict(
            size=merged("size", jnp.sum, jnp.add, 1, 0),
            first=merged("first", jnp.min, jnp.minimum, p, big),
            x0=merged("x0", jnp.min, jnp.minimum, px, big),
            y0=merged("y0", jnp.min, jnp.minimum, py, big),
            x1=merged("x1", jnp.max, jnp.maximum, px, -1),
            y1=merged("y1", jnp.max, jnp.maximum, py, -1),
            vlast=v)
        if mode == "area":
            # Twice the contour-area gain: each 2x2 cell around p reaching 3 (4) pixels adds
            # a half (a whole) unit square.
            ds2 = sum((proc[a].astype(jnp.int32) + proc[b] + proc[c]) >= 2 for a, b, c in _CELLS)
            new["s2"] = merged("s2", jnp.sum, jnp.add, ds2, 0)
        out = dict(st, tab=tab)
        for name, value in new.items():
            out[name] = st[name].at[root].set(value)
        par = par.at[jnp.where(proc, nbc, n)].set(root)   # path compression of the neighbours
        par = par.at[rv].set(root)
        out["par"] = par.at[p].set(root)
        return out

    state = lax.fori_loop(0, n, body, state)
    # The whole grid is one component at the end: close its record for levels [0, v - 1].
    root = state["par"][order[n - 1]]
    r = jnp.full((8,), n).at[0].set(root)
    live = k8 == 0
    hi = state["vlast"][r] - 1
    tab = emit(state["tab"], hi, live & (hi >= 0), r, state)
    return tab


def _best_per_level(tab, mode):
    """Reduce a [(lo, hi)] record table to the best record alive at each level L (lo<=L<=hi)."""
    lvl = jnp.arange(NUM_LEVELS)
    mask = lvl[None, :] >= lvl[:, None]                # [L, hi]: hi >= L
    if mode != "area":
        t = tab[:_TRASH].reshape(NUM_LEVELS, NUM_LEVELS)
        prefix = lax.cummax(t, axis=0)                  # over lo <= L
        return jnp.max(jnp.where(mask, prefix, -1.0), axis=1)
    fields = tuple(f[:_TRASH].reshape(NUM_LEVELS, NUM_LEVELS) for f in tab)

    def pick(a, b):
        take_b = (b[0] > a[0]) | ((b[0] == a[0]) & (b[1] > a[1]))
        return tuple(jnp.where(take_b, y, x) for x, y in zip(a, b))

    s2, first, bx, by = lax.associative_scan(pick, fields, axis=0)
    s2 = jnp.where(mask, s2, -1)
    best_s2 = jnp.max(s2, axis=1, keepdims=True)
    cand = (s2 == best_s2) & mask
    f = jnp.where(cand, first, -1)
    j = jnp.argmax(f, axis=1)
    take = lambda a: jnp.take_along_axis(a, j[:, None], axis=1)[:, 0]
    bx, by = take(bx), take(by)
    found = best_s2[:, 0] >= 0
    box = jnp.stack([bx & 0xFFFF, by & 0xFFFF, bx >> 16, by >> 16], axis=-1)
    return jnp.where(found[:, None], box, 0), found


def largest_components(values):
    """Bounding box of the largest 8-connected component of ``{g > L}`` for every level L.

    Args:
      values: int32 ``[B, H, W]``, already hole-filled (see :func:`fill_holes`), in [0, 255].

    Returns:
      ``(boxes, found)``: int32 ``[B, 256, 4]`` raw ``(x_min, y_min, x_max, y_max)`` of the
      component with the largest contour area (ties: the one whose first pixel in raster order
      comes last), and bool ``[B, 256]`` whether ``{g > L}`` is non-empty.
    """
    b, h, w = values.shape
    lane = functools.partial(_lane_pass, height=h, width=w, mode="area")
    allowed = jnp.ones((8,), bool)
    g0 = jnp.zeros((1, 4), jnp.int32)
    v0 = jnp.zeros((1,), bool)
    tabs = jax.vmap(lane, in_axes=(0, None, None, None, None))(
        values.reshape(b, h * w), allowed, g0, v0, jnp.array(False))
    return jax.vmap(functools.partial(_best_per_level, mode="area"))(tabs)


def best_contour_iou(values, gt_boxes, gt_valid):
    """Max IoU with the GT over every contour (components and holes) of ``{v > L}``, every L.

    Args:
      values: int32 ``[B, H, W]`` in [0, 255].
      gt_boxes: int32 ``[B, G, 4]``; gt_valid: bool ``[B, G]``.

    Returns:
      float32 ``[B, 256]``: for each level the max IoU over the boxes of every 8-connected
      component of ``{v > L}`` and of every hole (4-connected component of ``{v <= L}`` not
      touching the image frame); -1 where ``{v > L}`` is empty.
    """
    b, h, w = values.shape
    flat = values.reshape(b, h * w)
    lanes = jnp.concatenate([flat, NUM_LEVELS - 1 - flat], axis=0)
    allowed = jnp.stack([jnp.ones((8,), bool), jnp.asarray(~_DIAGONAL)])
    allowed = jnp.repeat(allowed, b, axis=0)
    is_hole = jnp.repeat(jnp.array([False, True]), b)
    lane = functools.partial(_lane_pass, height=h, width=w, mode="iou")
    tabs = jax.vmap(lane)(lanes, allowed, jnp.concatenate([gt_boxes] * 2),
                          jnp.concatenate([gt_valid] * 2), is_hole)
    best = jax.vmap(functools.partial(_best_per_level, mode="iou"))(tabs)
    comp, hole = best[:b], best[b:]
    # Background level L' of a hole lane is {255 - v > L'} = {v <= 254 - L'}.
    hole = jnp.concatenate([hole[:, NUM_LEVELS - 2::-1], jnp.full((b, 1), -1.0)], axis=1)
    return jnp.maximum(comp, hole)
