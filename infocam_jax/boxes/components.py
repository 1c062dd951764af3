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

The pass runs a batch of maps ("lanes") in lockstep, one pixel per lane per step. It is exact
but sequential over the pixels (about H*W steps of a few dozen small gathers and scatters), so
its cost does not depend on the number of thresholds; at 100 thresholds a per-image OpenCV loop
is still faster on a CPU, at 1000 this is (see benchmarks/boxes_vs_opencv.py). Limits: H*W must
stay below 2**23 (packed int32 keys) and W, H below 2**16.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from infocam_jax.native import protocol

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
        # g_j = max(v_j, min(g_j, g_{j-1})) along one axis, in place, vectorised over the rest.
        size = values.shape[axis]

        def step(i, g):
            j = size - 1 - i if reverse else i
            k = j + 1 if reverse else j - 1
            prev = lax.dynamic_slice_in_dim(g, jnp.clip(k, 0, size - 1), 1, axis)
            prev = jnp.where((k >= 0) & (k < size), prev, 0)      # outside the image: 0
            cur = lax.dynamic_slice_in_dim(g, j, 1, axis)
            val = lax.dynamic_slice_in_dim(values, j, 1, axis)
            return lax.dynamic_update_slice_in_dim(
                g, jnp.maximum(val, jnp.minimum(cur, prev)), j, axis)

        return lax.fori_loop(0, size, step, g)

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


def iou_with_gt(boxes, gt_boxes, gt_valid):
    """Max IoU over valid GT boxes: boxes ``[B, T, 4]``, gt ``[B, G, 4]`` -> float32 ``[B, T]``
    (:func:`infocam_jax.native.protocol.max_iou_with_gt` in jax.numpy)."""
    return protocol.max_iou_with_gt(boxes, gt_boxes, gt_valid, xp=jnp)


# Columns of the per-root attribute rows.
_SB, _FIRST, _X0, _Y0, _X1, _Y1, _S2 = range(7)
_NATTR = 8


class _Lanes(NamedTuple):
    """What every step of :func:`_batched_pass` reads (traced arrays and static sizes).

    Arrays indexed per lane are stored flat, lane-major: 1-D gathers and scatters are cheaper
    per index on XLA's CPU backend than 2-D ones. ``off_n`` / ``off_t`` are each lane's offset
    into the flat per-pixel arrays (``n + 1`` rows a lane, the last a dump) and into the flat
    record table (``_TRASH + 1`` rows a lane).
    """
    values: jax.Array          # int32 [B, n]
    order: jax.Array           # int32 [B, n]: pixels by descending value, raster order within
    nbr: jax.Array             # int32 [n, 8]: neighbour pixel or -1
    allowed: jax.Array         # bool [B, 8]
    gt_boxes: jax.Array
    gt_valid: jax.Array
    is_hole: jax.Array         # bool [B]
    rows: jax.Array            # int32 [B, 1]
    off_n: jax.Array           # int32 [B, 1]
    off_t: jax.Array           # int32 [B, 1]
    height: int
    width: int
    mode: str


def _fget(a, idx, off):
    """``a[lane, idx]`` of a flat lane-major array (``idx`` ``[B]`` or ``[B, K]``)."""
    return a[(off if idx.ndim == 2 else off[:, 0]) + idx]


def _emit(lanes: _Lanes, tab, cell, live, rec):
    """Reduce closing records ``rec`` [B, K, _NATTR] (masked by ``live``) into the table."""
    cell = jnp.where(live, cell, _TRASH)
    x0, y0, x1, y1 = (rec[..., c] for c in (_X0, _Y0, _X1, _Y1))
    if lanes.mode == "area":
        ks2, kf = rec[..., _S2], rec[..., _FIRST]
        better = (ks2[:, None, :] > ks2[:, :, None]) | (
            (ks2[:, None, :] == ks2[:, :, None]) & (kf[:, None, :] > kf[:, :, None]))
        same = (cell[:, None, :] == cell[:, :, None]) & live[:, None, :]
        beaten = jnp.any(same & better, axis=2)
        cur = _fget(tab, cell, lanes.off_t)
        upd = live & ~beaten & ((ks2 > cur[..., 0]) | ((ks2 == cur[..., 0]) & (kf > cur[..., 1])))
        row = jnp.stack([ks2, kf, x0 | (x1 << 16), y0 | (y1 << 16)], axis=-1)
        return tab.at[lanes.off_t + jnp.where(upd, cell, _TRASH)].set(row)
    # A hole's contour runs through the foreground pixels around it: one pixel wider.
    height, width, is_hole = lanes.height, lanes.width, lanes.is_hole
    grow = is_hole.astype(jnp.int32)[:, None]
    box = jnp.stack([x0 - grow, y0 - grow, jnp.minimum(x1 + 1 + grow, width - 1),
                     jnp.minimum(y1 + 1 + grow, height - 1)], axis=-1)
    u = iou_with_gt(box, lanes.gt_boxes, lanes.gt_valid)
    frame = (x0 == 0) | (y0 == 0) | (x1 == width - 1) | (y1 == height - 1)
    u = jnp.where(live & ~(is_hole[:, None] & frame), u, -1.0)
    return tab.at[lanes.off_t + cell].max(u)


def _touching_roots(lanes: _Lanes, par, p):
    """The distinct union-find roots of the processed neighbours of pixels ``p`` [B].

    Returns:
      ``(proc, nbc, rv, svalid)``: bool ``[B, 8]`` neighbours that are processed and connect;
      int32 ``[B, 8]`` neighbour index (n where none); the roots compacted to 4 slots, int32
      ``[B, 4]`` (n where empty: at most 4 distinct 8-connected components touch a pixel) and
      bool ``[B, 4]`` which slots hold one.
    """
    n = lanes.order.shape[1]
    nb = lanes.nbr[p]                                   # [B, 8]
    nbc = jnp.where(nb >= 0, nb, n)
    parent = _fget(par, nbc, lanes.off_n)
    proc = (nb >= 0) & (parent >= 0) & lanes.allowed

    def not_root(r):
        return jnp.any(proc & (_fget(par, r, lanes.off_n) != r))

    r = lax.while_loop(not_root, lambda r: jnp.where(proc, _fget(par, r, lanes.off_n), r),
                       jnp.where(proc, parent, n))
    k8 = jnp.arange(8)
    dup = jnp.any((r[:, None, :] == r[:, :, None]) & proc[:, None, :]
                  & (k8[None, :] < k8[:, None])[None], axis=2)
    valid = proc & ~dup
    pos = jnp.cumsum(valid, axis=1) - 1
    pick = valid[:, :, None] & (pos[:, :, None] == jnp.arange(4)[None, None, :])   # [B, 8, 4]
    svalid = jnp.any(pick, axis=1)
    rv = jnp.where(svalid, jnp.sum(jnp.where(pick, r[:, :, None], 0), axis=1), n)
    return proc, nbc, rv, svalid


def _merged_row(lanes: _Lanes, p, v, proc, svalid, rec):
    """The attribute row ``[B, _NATTR]`` of the component that pixels ``p`` (value ``v``) join
    with the roots' records ``rec`` [B, 4, _NATTR] (slots ``svalid``)."""
    big = jnp.int32(2**30)
    py, px = p // lanes.width, p % lanes.width

    def merged(col, reduce, combine, own, empty):
        return combine(own, reduce(jnp.where(svalid, rec[..., col], empty), axis=1))

    size = 1 + jnp.sum(jnp.where(svalid, rec[..., _SB] >> 8, 0), axis=1)
    if lanes.mode == "area":
        # Twice the contour-area gain: each 2x2 cell around p reaching 3 (4) pixels adds
        # a half (a whole) unit square.
        c = proc.astype(jnp.int32)
        ds2 = sum((c[:, a] + c[:, b] + c[:, d]) >= 2 for a, b, d in _CELLS)
        s2 = merged(_S2, jnp.sum, jnp.add, ds2, 0)
    else:
        s2 = jnp.zeros_like(p)
    return jnp.stack([
        size * NUM_LEVELS + v,
        merged(_FIRST, jnp.min, jnp.minimum, p, big),
        merged(_X0, jnp.min, jnp.minimum, px, big),
        merged(_Y0, jnp.min, jnp.minimum, py, big),
        merged(_X1, jnp.max, jnp.maximum, px, -1),
        merged(_Y1, jnp.max, jnp.maximum, py, -1),
        s2, jnp.zeros_like(p)], axis=-1)


def _visit(lanes: _Lanes, t, state):
    """Step ``t`` of the pass: every lane adds its ``t``-th pixel (in descending value)."""
    par, attr, tab = state
    n = lanes.order.shape[1]
    p = lanes.order[:, t]
    v = lanes.values[lanes.rows[:, 0], p]
    proc, nbc, rv, svalid = _touching_roots(lanes, par, p)
    rec = _fget(attr, rv, lanes.off_n)                  # [B, 4, _NATTR]
    sizeborn = jnp.where(svalid, rec[..., _SB], -1)
    biggest = jnp.take_along_axis(rv, jnp.argmax(sizeborn, axis=1)[:, None], axis=1)[:, 0]
    root = jnp.where(jnp.any(svalid, axis=1), biggest, p)

    # Close the records of every root that changes (absorbed or growing).
    hi = (rec[..., _SB] & (NUM_LEVELS - 1)) - 1
    live = svalid & (v[:, None] <= hi)
    tab = _emit(lanes, tab, v[:, None] * NUM_LEVELS + hi, live, rec)
    attr = attr.at[lanes.off_n[:, 0] + root].set(_merged_row(lanes, p, v, proc, svalid, rec))
    # New parents: the pixel, the absorbed roots and (path compression) the neighbours.
    targets = jnp.concatenate([p[:, None], rv, jnp.where(proc, nbc, n)], axis=1)
    par = par.at[lanes.off_n + targets].set(root[:, None])
    return par, attr, tab


def _batched_pass(values, allowed, gt_boxes, gt_valid, is_hole, *, height, width, mode):
    """One union-find pass over a batch of maps (lanes in lockstep).

    Written with an explicit batch axis rather than ``vmap`` (a vmapped ``while_loop`` with a
    per-lane predicate would select between old and new copies of the whole parent array at
    every step), and with each root's attributes packed in one row so that a step gathers and
    scatters few indices (XLA's CPU gathers and scatters cost per index).

    Args:
      values: int32 ``[B, H*W]`` in [0, 255].
      allowed: bool ``[B, 8]`` neighbours that connect (all for 8-, no diagonals for 4-conn.).
      gt_boxes, gt_valid: ``[B, G, 4]``, ``[B, G]`` (used by ``mode="iou"``).
      is_hole: bool ``[B]``, lanes whose components are background (hole) regions.
      mode: ``"area"`` keeps per level the largest-contour record (twice its area, first pixel,
        box); ``"iou"`` keeps per level the best IoU of a record's contour box with the GT.

    Returns:
      The record table, ``[B, 256*256 + 1, 4]`` int32 (area: twice the area, first pixel,
      ``x0 | x1 << 16``, ``y0 | y1 << 16``) or ``[B, 256*256 + 1]`` float32 (IoU); the last
      entry is a dump slot.
    """
    n = height * width
    batch = values.shape[0]
    keys = (NUM_LEVELS - 1 - values) * n + jnp.arange(n, dtype=jnp.int32)[None, :]
    rows = jnp.arange(batch)[:, None]
    lanes = _Lanes(values=values, order=lax.sort(keys, dimension=1) % n,
                   nbr=jnp.asarray(neighbour_table(height, width)), allowed=allowed,
                   gt_boxes=gt_boxes, gt_valid=gt_valid, is_hole=is_hole, rows=rows,
                   off_n=rows * (n + 1), off_t=rows * (_TRASH + 1), height=height, width=width,
                   mode=mode)
    # par: union-find parent (-1: not yet processed); attr: per-root rows. Index n is a dump.
    # Column _SB packs the root's pixel count and the level its current record was born at:
    # size * 256 + level.
    par = jnp.full((batch * (n + 1),), -1, jnp.int32)
    attr = jnp.zeros((batch * (n + 1), _NATTR), jnp.int32)
    if mode == "area":
        tab = jnp.full((batch * (_TRASH + 1), 4), -1, jnp.int32)
    else:
        tab = jnp.full((batch * (_TRASH + 1),), -1.0, jnp.float32)
    par, attr, tab = lax.fori_loop(0, n, functools.partial(_visit, lanes), (par, attr, tab))
    # The whole grid is one component at the end: close its record for levels [0, v - 1].
    root = _fget(par, lanes.order[:, n - 1], lanes.off_n)
    rec = _fget(attr, root[:, None], lanes.off_n)       # [B, 1, _NATTR]
    hi = (rec[..., _SB] & (NUM_LEVELS - 1)) - 1
    tab = _emit(lanes, tab, hi, hi >= 0, rec)
    return tab.reshape((batch, _TRASH + 1) + tab.shape[1:])


def _best_per_level(tab, mode):
    """Reduce a batch of [(lo, hi)] record tables to the best record alive at each level.

    A record in cell (lo, hi) is the state of a component for the levels ``lo <= L <= hi``.

    Returns:
      ``mode="iou"``: float32 ``[B, 256]`` (-1: no record). ``mode="area"``: int32 raw boxes
      ``[B, 256, 4]`` and bool ``[B, 256]`` whether any record is alive.
    """
    batch = tab.shape[0]
    lvl = jnp.arange(NUM_LEVELS)
    mask = (lvl[None, :] >= lvl[:, None])[None]         # [1, L, hi]: hi >= L
    if mode != "area":
        t = tab[:, :_TRASH].reshape(batch, NUM_LEVELS, NUM_LEVELS)
        prefix = lax.cummax(t, axis=1)                  # over lo <= L
        return jnp.max(jnp.where(mask, prefix, -1.0), axis=2)
    t = tab[:, :_TRASH].reshape(batch, NUM_LEVELS, NUM_LEVELS, 4)

    def lexmax(a, b):
        take_b = (b[..., 0] > a[..., 0]) | ((b[..., 0] == a[..., 0]) & (b[..., 1] > a[..., 1]))
        return jnp.where(take_b[..., None], b, a)

    def step(carry, level):
        # carry[hi]: best record with lo <= level; alive at this level when also hi >= level.
        carry = lexmax(carry, t[:, level])
        alive = jnp.where((lvl >= level)[None, :, None], carry, -1)          # [B, hi, 4]
        best_s2 = jnp.max(alive[..., 0], axis=1, keepdims=True)
        first = jnp.where(alive[..., 0] == best_s2, alive[..., 1], -1)
        j = jnp.argmax(first, axis=1)
        return carry, jnp.take_along_axis(alive, j[:, None, None], axis=1)[:, 0]

    _, win = lax.scan(step, jnp.full((batch, NUM_LEVELS, 4), -1, jnp.int32), lvl)
    win = jnp.moveaxis(win, 0, 1)                         # [B, L, 4]
    bx, by = win[..., 2], win[..., 3]
    found = win[..., 0] >= 0
    box = jnp.stack([bx & 0xFFFF, by & 0xFFFF, bx >> 16, by >> 16], axis=-1)
    return jnp.where(found[..., None], box, 0), found


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
    tabs = _batched_pass(values.reshape(b, h * w), jnp.ones((b, 8), bool),
                         jnp.zeros((b, 1, 4), jnp.int32), jnp.zeros((b, 1), bool),
                         jnp.zeros((b,), bool), height=h, width=w, mode="area")
    return _best_per_level(tabs, "area")


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
    tabs = _batched_pass(lanes, allowed, jnp.concatenate([gt_boxes] * 2),
                         jnp.concatenate([gt_valid] * 2), is_hole, height=h, width=w,
                         mode="iou")
    best = _best_per_level(tabs, "iou")
    comp, hole = best[:b], best[b:]
    # Background level L' of a hole lane is {255 - v > L'} = {v <= 254 - L'}.
    hole = jnp.concatenate([hole[:, NUM_LEVELS - 2::-1], jnp.full((b, 1), -1.0)], axis=1)
    return jnp.maximum(comp, hole)
