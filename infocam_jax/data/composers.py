"""Synthetic digit canvases with ground-truth boxes (pure NumPy, deterministic from a seed).

Three things live here:

* `load_sklearn_digits`: the 1797 handwritten 8x8 digits scikit-learn ships, upsampled to MNIST
  look (20x20 ink in a 28x28 frame) with a fixed stratified train/test split, so the double-digit
  task runs with no download at all.
* `compose_double_digit`: the double-digit canvases of the paper (section 3.3).
* `compose_cluttered`: a single-label localisation canvas (one digit at a random position and
  scale among clutter) for a CPU-scale WSOL benchmark.

Every composer returns a dict of NumPy arrays with one row per canvas::

    image        uint8   [N, H, W, 1]
    label        int32   [N]        class id; multi-label canvases: the smallest present digit
    labels       float32 [N, 10]    multi-hot (one-hot for single-label canvases)
    boxes        float32 [N, G, 4]  (x0, y0, x1, y1) inclusive pixel coords in the canvas: the
                                    tight box of the digit's nonzero pixels (x1/y1 = last ink
                                    column/row); rows with box_valid False are all zero
    box_labels   int32   [N, G]     digit id of each box, -1 where box_valid is False
    box_valid    bool    [N, G]
    source_index int64   [N, G]     index of the source digit in the `images` given, -1 if absent

"Ink" means pixel value > 0 throughout. Canvases are built from the source images by copying
(double digit) or by resizing with a bilinear filter and rounding (cluttered), and boxes are
measured on the pixels actually placed, so a box is exactly tight on the digit in the canvas.
"""

from __future__ import annotations

import numpy as np

NUM_CLASSES = 10
DIGIT_SIZE = 28


# --------------------------------------------------------------------------- helpers


def ink_boxes(images: np.ndarray) -> np.ndarray:
    """Tight boxes of the nonzero pixels of each image.

    Args:
      images: [N, H, W] (any numeric dtype).

    Returns:
      int32 [N, 4] (x0, y0, x1, y1), inclusive; rows of blank images are (-1, -1, -1, -1).
    """
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must be [N, H, W], got shape {images.shape}")
    ink = images > 0
    cols, rows = ink.any(axis=1), ink.any(axis=2)  # [N, W], [N, H]
    width, height = cols.shape[1], rows.shape[1]
    x0 = cols.argmax(axis=1)
    x1 = width - 1 - cols[:, ::-1].argmax(axis=1)
    y0 = rows.argmax(axis=1)
    y1 = height - 1 - rows[:, ::-1].argmax(axis=1)
    out = np.stack([x0, y0, x1, y1], axis=1).astype(np.int32)
    out[~cols.any(axis=1)] = -1
    return out


def bilinear_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """1-D resampling matrix of PIL's BILINEAR filter (triangle kernel, antialiased on shrink).

    Pixel centres are aligned as in PIL (`Image.resize(..., Image.BILINEAR)`): output pixel i
    samples around input coordinate (i + 0.5) * in_size / out_size; when shrinking, the kernel is
    widened by the scale factor so every input pixel contributes (area-preserving antialiasing).

    Returns:
      float64 [out_size, in_size]; each row sums to 1.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be >= 1, got in_size={in_size}, out_size={out_size}")
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    centres = (np.arange(out_size) + 0.5) * scale  # [out]
    x = np.arange(in_size) + 0.5  # input pixel centres
    weights = np.clip(1.0 - np.abs((x[None, :] - centres[:, None]) / filter_scale), 0.0, None)
    # PIL only visits input pixels within `support` of the centre; the triangle is 0 there anyway.
    return weights / weights.sum(axis=1, keepdims=True)


def resize_images(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear (PIL-style) resize of a batch of single-channel images.

    Args:
      images: [N, h, w] numeric.
      height, width: output size.

    Returns:
      float32 [N, height, width] (not rounded; values stay within the input range).
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 3:
        raise ValueError(f"images must be [N, h, w], got shape {images.shape}")
    ry = bilinear_resize_matrix(images.shape[1], height).astype(np.float32)
    rx = bilinear_resize_matrix(images.shape[2], width).astype(np.float32)
    return np.matmul(np.matmul(ry, images), rx.T)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _check_source(
    images: np.ndarray, labels: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 3 or images.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE) or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [N, 28, 28], got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be [N] = [{images.shape[0]}], got shape {labels.shape}")
    if labels.size == 0:
        raise ValueError("images is empty: need at least one source digit per class")
    if (
        not np.issubdtype(labels.dtype, np.integer)
        or labels.min() < 0
        or labels.max() >= num_classes
    ):
        raise ValueError(
            f"labels must be integers in [0, {num_classes}), got {labels.dtype} "
            f"range [{labels.min()}, {labels.max()}]"
        )
    counts = np.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        raise ValueError(
            f"every class needs at least one source image; missing classes "
            f"{np.flatnonzero(counts == 0).tolist()}"
        )
    blank = ~(images > 0).reshape(images.shape[0], -1).any(axis=1)
    if blank.any():
        raise ValueError(
            f"source images without ink (all zero) at indices {np.flatnonzero(blank)[:10].tolist()}"
        )
    return images, labels.astype(np.int64)


def _sample_digits(
    rng: np.random.Generator, labels: np.ndarray, shape: tuple[int, ...], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draws a class uniformly, then an image of that class uniformly.

    Returns:
      (classes int64 `shape`, source indices int64 `shape`).
    """
    classes = rng.integers(0, num_classes, size=shape)
    u = rng.random(size=shape)
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=num_classes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    within = np.minimum((u * counts[classes]).astype(np.int64), counts[classes] - 1)
    return classes, order[starts[classes] + within]


def _multi_hot(classes: np.ndarray, valid: np.ndarray, num_classes: int) -> np.ndarray:
    out = np.zeros((classes.shape[0], num_classes), bool)
    rows = np.arange(classes.shape[0])
    for g in range(classes.shape[1]):  # G is 1 or 2: one vectorised assignment per box slot
        out[rows, classes[:, g]] |= valid[:, g]
    return out.astype(np.float32)


# --------------------------------------------------------------------------- sklearn digits


def load_sklearn_digits(
    split_seed: int = 0, train_fraction: float = 2 / 3, ink_size: int = 20
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's 1797 handwritten digits, upsampled to look like MNIST.

    Each 8x8 image (values 0..16) is scaled to 0..255, resized bilinearly to `ink_size` x
    `ink_size` and centred in a 28x28 frame (MNIST's digits are normalised to a 20x20 box). The
    split is stratified by class and fixed by `split_seed` (independent of any canvas seed), so
    train and test canvases are always built from disjoint source digits.

    Returns:
      {"train": (uint8 [n_train, 28, 28], uint8 [n_train]), "test": (...)}; with the defaults
      n_train = 1198 and n_test = 599, each in the original sklearn order.
    """
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel

    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    if not 1 <= ink_size <= DIGIT_SIZE:
        raise ValueError(f"ink_size must be in [1, 28], got {ink_size}")
    bunch = load_digits()
    small = np.asarray(bunch.images, np.float32) * (255.0 / 16.0)  # [1797, 8, 8]
    target = np.asarray(bunch.target, np.int64)
    big = _to_uint8(resize_images(small, ink_size, ink_size))
    lo = (DIGIT_SIZE - ink_size) // 2
    frames = np.zeros((small.shape[0], DIGIT_SIZE, DIGIT_SIZE), np.uint8)
    frames[:, lo : lo + ink_size, lo : lo + ink_size] = big

    keys = np.random.default_rng(split_seed).random(target.shape[0])
    order = np.lexsort((keys, target))
    counts = np.bincount(target, minlength=NUM_CLASSES)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0]) - starts[target[order]]
    is_train = rank < np.rint(counts[target] * train_fraction)
    return {
        "train": (frames[is_train], target[is_train].astype(np.uint8)),
        "test": (frames[~is_train], target[~is_train].astype(np.uint8)),
    }


# --------------------------------------------------------------------------- double digit


def compose_double_digit(
    images: np.ndarray,
    labels: np.ndarray,
    num_canvases: int,
    seed,
    *,
    presence_prob: float = 0.7,
    num_classes: int = NUM_CLASSES,
) -> dict[str, np.ndarray]:
    """Double-digit canvases (paper section 3.3).

    A 28x56 canvas has a left slot (columns 0..27) and a right slot (columns 28..55). Each side
    independently holds a digit with probability `presence_prob`; a digit is drawn by picking a
    class uniformly and then one image of that class uniformly. Canvases with no digit are
    discarded and redrawn, so among kept canvases each side is occupied with probability
    p / (1 - (1 - p)^2) (0.7 / 0.91 = 0.769 for p = 0.7).

    Both sides may hold the same class: `labels` then has that class once, while `boxes` holds
    two boxes with the same `box_labels`. For localisation, the box of a present class is any
    valid box with that class (a prediction counts as a hit if it matches any of them).

    Args:
      images: uint8 [N, 28, 28] source digits (every one with ink).
      labels: int [N] in [0, num_classes); every class must occur.
      num_canvases: number of canvases to return.
      seed: generation seed: int or sequence of ints (np.random.default_rng).
      presence_prob: per-side presence probability, in (0, 1].

    Returns:
      dict as in the module docstring with image uint8 [num_canvases, 28, 56, 1] and G = 2 box
      slots (slot 0 = left, slot 1 = right).
    """
    images, labels = _check_source(images, labels, num_classes)
    if num_canvases < 0:
        raise ValueError(f"num_canvases must be >= 0, got {num_canvases}")
    if not 0 < presence_prob <= 1:
        raise ValueError(f"presence_prob must be in (0, 1], got {presence_prob}")
    rng = np.random.default_rng(seed)
    keep_rate = 1 - (1 - presence_prob) ** 2
    kept, have = [], 0
    while have < num_canvases:  # rejection of empty canvases, drawn in vectorised rounds
        draw = rng.random((int((num_canvases - have) / keep_rate * 1.1) + 16, 2)) < presence_prob
        draw = draw[draw.any(axis=1)]
        kept.append(draw)
        have += draw.shape[0]
    present = np.concatenate(kept or [np.zeros((0, 2), bool)])[:num_canvases]  # [n, 2]
    classes, source = _sample_digits(rng, labels, (num_canvases, 2), num_classes)

    canvas = np.zeros((num_canvases, DIGIT_SIZE, 2 * DIGIT_SIZE), np.uint8)
    for side in range(2):
        chosen = source[present[:, side], side]
        canvas[present[:, side], :, side * DIGIT_SIZE : (side + 1) * DIGIT_SIZE] = images[chosen]
    shift = np.array([[0, 0, 0, 0], [DIGIT_SIZE, 0, DIGIT_SIZE, 0]], np.int32)  # per side
    boxes = (ink_boxes(images)[source] + shift[None]).astype(np.float32)  # [n, 2, 4]
    boxes[~present] = 0
    return {
        "image": canvas[..., None],
        "label": np.argmax(_multi_hot(classes, present, num_classes), axis=1).astype(np.int32),
        "labels": _multi_hot(classes, present, num_classes),
        "boxes": boxes,
        "box_labels": np.where(present, classes, -1).astype(np.int32),
        "box_valid": present,
        "source_index": np.where(present, source, -1).astype(np.int64),
    }


# --------------------------------------------------------------------------- cluttered single digit


def compose_cluttered(
    images: np.ndarray,
    labels: np.ndarray,
    num_canvases: int,
    seed,
    *,
    canvas_size: int = 64,
    scale_range: tuple[float, float] = (0.8, 1.6),
    num_clutter: int = 4,
    clutter_size: int = 8,
    clutter_gap: int = 2,
    num_classes: int = NUM_CLASSES,
) -> dict[str, np.ndarray]:
    """Single-label cluttered canvases: one digit at a random position and scale among clutter.

    The target digit (class uniform, then image uniform within the class) is resized bilinearly
    from 28x28 to s x s with s = round(28 * scale), scale ~ U(scale_range), and placed with its
    s x s frame uniformly inside the canvas. Then `num_clutter` fragments of
    `clutter_size` x `clutter_size` pixels, cropped from the ink region of other random source
    digits (as in cluttered MNIST), are pasted (pixel-wise max) at uniform positions that keep
    at least `clutter_gap` blank pixels from the target's ink box (so no fragment fuses with
    the digit), and the target box stays exactly tight on the target digit.

    Args:
      images: uint8 [N, 28, 28] source digits; labels: int [N] in [0, num_classes).
      num_canvases: number of canvases; seed: generation seed (int or sequence of ints).
      canvas_size: S, the square canvas side; must be >= round(28 * scale_range[1]) +
        clutter_size + clutter_gap (45 + 8 + 2 = 55 by default).
      scale_range: (low, high) scale of the 28-pixel frame.
      num_clutter: fragments per canvas (0 for none); clutter_size: fragment side (<= 28).
      clutter_gap: minimum distance in pixels (>= 0) between a fragment and the target box.

    Returns:
      dict as in the module docstring with image uint8 [num_canvases, S, S, 1] and G = 1, plus
      `target_size` int32 [N] (s) and `target_offset` int32 [N, 2] ((x, y) of the frame's
      top-left corner) describing where the target frame was placed.
    """
    images, labels = _check_source(images, labels, num_classes)
    _check_cluttered(num_canvases, canvas_size, scale_range, num_clutter, clutter_size,
                     clutter_gap)
    rng = np.random.default_rng(seed)
    n, size = num_canvases, canvas_size
    classes, source = _sample_digits(rng, labels, (n,), num_classes)
    sizes = np.rint(DIGIT_SIZE * rng.uniform(*scale_range, n)).astype(np.int64)
    offsets = np.floor(rng.random((n, 2)) * (size - sizes + 1)[:, None]).astype(np.int64)  # (x, y)

    canvas = np.zeros((n, size, size), np.uint8)
    boxes = _paste_targets(canvas, images, source, sizes, offsets)
    if num_clutter:
        _paste_clutter(rng, canvas, images, boxes, num_clutter, clutter_size, clutter_gap)

    valid = np.ones((n, 1), bool)
    return {
        "image": canvas[..., None],
        "label": classes.astype(np.int32),
        "labels": _multi_hot(classes[:, None], valid, num_classes),
        "boxes": boxes[:, None, :].astype(np.float32),
        "box_labels": classes[:, None].astype(np.int32),
        "box_valid": valid,
        "source_index": source[:, None].astype(np.int64),
        "target_size": sizes.astype(np.int32),
        "target_offset": offsets.astype(np.int32),
    }


def _check_cluttered(num_canvases, canvas_size, scale_range, num_clutter, clutter_size,
                     clutter_gap) -> None:
    """The argument checks of :func:`compose_cluttered`."""
    lo, hi = scale_range
    if not 0 < lo <= hi:
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    if not 1 <= clutter_size <= DIGIT_SIZE or num_clutter < 0 or clutter_gap < 0:
        raise ValueError(
            "need 1 <= clutter_size <= 28, num_clutter >= 0 and clutter_gap >= 0, got "
            f"{clutter_size}, {num_clutter}, {clutter_gap}"
        )
    max_size = int(np.rint(DIGIT_SIZE * hi))
    needed = max_size + (clutter_size + clutter_gap if num_clutter else 0)
    if canvas_size < needed:
        raise ValueError(
            f"canvas_size={canvas_size} too small: need >= {needed} for scale_range={scale_range}, "
            f"clutter_size={clutter_size}, clutter_gap={clutter_gap}"
        )
    if num_canvases < 0:
        raise ValueError(f"num_canvases must be >= 0, got {num_canvases}")


def _paste_targets(canvas: np.ndarray, images: np.ndarray, source: np.ndarray,
                   sizes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Pastes digit ``images[source[i]]``, resized to ``sizes[i]``, at ``offsets[i]`` (x, y) of
    ``canvas[i]`` (in place); returns the tight ink boxes, int64 [n, 4]."""
    boxes = np.zeros((canvas.shape[0], 4), np.int64)
    for s in np.unique(sizes):  # one vectorised resize per distinct frame size (<= ~25 sizes)
        sel = np.flatnonzero(sizes == s)
        frames = _to_uint8(resize_images(images[source[sel]], s, s))  # [k, s, s]
        span = np.arange(s)
        rows = offsets[sel, 1, None] + span  # [k, s]
        cols = offsets[sel, 0, None] + span
        canvas[sel[:, None, None], rows[:, :, None], cols[:, None, :]] = frames
        local = ink_boxes(frames)
        if (local[:, 0] < 0).any():
            raise ValueError(
                "a resized target digit lost all its ink; use a larger scale_range low end"
            )
        boxes[sel] = local + np.tile(offsets[sel], 2)
    return boxes


def _paste_clutter(rng, canvas: np.ndarray, images: np.ndarray, boxes: np.ndarray,
                   num_clutter: int, clutter_size: int, clutter_gap: int) -> None:
    """Pastes (pixel-wise max, in place) ``num_clutter`` fragments of random source digits per
    canvas, at positions at least ``clutter_gap`` pixels away from the target ``boxes``."""
    n, size = canvas.shape[0], canvas.shape[1]
    c = clutter_size
    margin = min(4, (DIGIT_SIZE - c) // 2)  # crop inside MNIST's 20x20 ink area when possible
    crop_src = rng.integers(0, images.shape[0], (n, num_clutter))
    crop_at = rng.integers(margin, DIGIT_SIZE - c - margin + 1, (n, num_clutter, 2))  # (x, y)
    span = np.arange(c)
    patches = images[
        crop_src[..., None, None],
        crop_at[..., 1, None, None] + span[:, None],
        crop_at[..., 0, None, None] + span[None, :],
    ]  # [n, k, c, c]
    place = rng.integers(0, size - c + 1, (n, num_clutter, 2))
    near = boxes[:, None, :] + np.array([-1, -1, 1, 1]) * clutter_gap  # grown target box
    for _ in range(10_000):  # redraw positions too close to the target (vectorised rounds)
        bad = (
            (place[..., 0] <= near[..., 2])
            & (place[..., 0] + c - 1 >= near[..., 0])
            & (place[..., 1] <= near[..., 3])
            & (place[..., 1] + c - 1 >= near[..., 1])
        )
        if not bad.any():
            break
        place[bad] = rng.integers(0, size - c + 1, (int(bad.sum()), 2))
    else:  # pragma: no cover - impossible given the canvas_size check
        raise RuntimeError("could not place clutter outside the target box")
    rows_all = np.arange(n)[:, None, None]
    for j in range(num_clutter):  # one vectorised paste per fragment slot
        rows = place[:, j, 1, None] + span
        cols = place[:, j, 0, None] + span
        idx = (rows_all, rows[:, :, None], cols[:, None, :])
        canvas[idx] = np.maximum(canvas[idx], patches[:, j])
