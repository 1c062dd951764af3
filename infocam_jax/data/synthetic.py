"""A file-free, deterministic stand-in dataset (``config.dataset == "synthetic"``) for smoke tests.

Each record is a noise image of ``config.image_size`` with one bright filled rectangle per
present class (intensity depending on the class), in the same record format as the real
builders: ``image`` uint8 [H, W, C], ``label`` int, ``labels`` float32 [M] multi-hot (only when
``multi_label``), ``boxes`` float32 [G, 4] inclusive (x0, y0, x1, y1), ``box_labels`` int32 [G].
Record ``i`` of a split is a pure function of ``(data_seed, split, i)``.
"""
from __future__ import annotations

import numpy as np

SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}


def split_sizes(num_train: int, num_test: int) -> dict:
    """train = num_train; num_test is halved into validation (first half) and test."""
    return {"train": int(num_train), "validation": int(num_test) // 2,
            "test": int(num_test) - int(num_test) // 2}


class SyntheticSource:
    """Random-access source of synthetic records (``len(src)``, ``src[i]``)."""

    def __init__(self, split: str, *, num_examples: int, image_size, channels: int,
                 num_classes: int, multi_label: bool, max_boxes: int, seed: int):
        if split not in SPLIT_IDS:
            raise ValueError(f"split must be one of {tuple(SPLIT_IDS)}; got {split!r}")
        if num_examples < 0 or num_classes < 1 or max_boxes < 1 or channels not in (1, 3):
            raise ValueError(
                f"bad synthetic parameters: num_examples={num_examples}, num_classes="
                f"{num_classes}, max_boxes={max_boxes}, channels={channels} (1 or 3)")
        self._split_id = SPLIT_IDS[split]
        self._n = int(num_examples)
        self._hw = (int(image_size[0]), int(image_size[1]))
        self._c = int(channels)
        self._m = int(num_classes)
        self._multi = bool(multi_label)
        self._g = int(max_boxes)
        self._seed = int(seed)

    def __len__(self) -> int:
        return self._n

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self._seed, self._split_id, int(i)])

    def _classes(self, rng) -> np.ndarray:
        if self._multi:
            k = int(rng.integers(1, min(2, self._g, self._m) + 1))
            return rng.choice(self._m, size=k, replace=False).astype(np.int32)
        return np.array([rng.integers(self._m)], np.int32)

    def label(self, i: int) -> np.ndarray:
        """The present classes of record ``i`` (int32 [G]) without drawing its image."""
        return self._classes(self._rng(i))

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if not 0 <= i < self._n:
            raise IndexError(f"index {i} out of range for {self._n} synthetic examples")
        rng = self._rng(i)
        classes = self._classes(rng)
        h, w = self._hw
        image = rng.integers(0, 64, size=(h, w, self._c), dtype=np.uint8)
        boxes = []
        for c in classes:
            bw = int(rng.integers(max(1, w // 4), max(2, w // 2) + 1))
            bh = int(rng.integers(max(1, h // 4), max(2, h // 2) + 1))
            x0 = int(rng.integers(0, w - bw + 1))
            y0 = int(rng.integers(0, h - bh + 1))
            image[y0:y0 + bh, x0:x0 + bw] = 128 + (127 * (int(c) + 1)) // self._m
            boxes.append([x0, y0, x0 + bw - 1, y0 + bh - 1])
        record = {
            "image": image,
            "label": int(classes[0]),
            "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "box_labels": classes,
        }
        if self._multi:
            labels = np.zeros(self._m, np.float32)
            labels[classes] = 1.0
            record["labels"] = labels
        return record
