"""The evaluation protocol's static settings: which maps, how they become boxes, which grid.

``EvalSettings`` is hashable: it is baked into the compiled eval step (``step.make_eval_step``
caches one compiled step per settings, model and device count).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from infocam_jax import metrics

MAP_KINDS = ("cam", "infocam", "infocam_plus")
MULTI_LABEL_MAP_KINDS = ("cam", "infocam")
KNOWN_MAP_KINDS = ("cam", "infocam", "infocam_plus", "infocam_plus_region")
DISPLAY_NAMES = {"cam": "CAM", "infocam": "infoCAM", "infocam_plus": "infoCAM+",
                 "infocam_plus_region": "infoCAM+ (region rival)"}
NORMALIZE_MODES = ("minmax", "max")
NORMALIZE_NAMES = {"minmax": "min-max normalised", "max": "max-normalised"}
BOX_BACKENDS = ("auto", "native", "xla")
V2_IOU_THRESHOLDS = metrics.V2_IOU_THRESHOLDS


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """Static settings of the eval step.

    Attributes:
      image_size: (H, W) the score maps are upsampled to (the network input size).
      upsample: "bicubic" | "bilinear".
      region_size: infoCAM's square region R.
      cam_threshold: score threshold of GT-known / Top-1 Loc (the paper's 0.2).
      iou_threshold: IoU needed for a correct box (0.5).
      num_box_thresholds: n; the threshold grid of MaxBoxAcc and of the accuracy-vs-threshold
        curves is ``np.arange(0, 1, 1/n)``.
      map_kinds: map kinds to evaluate, a subset of ``KNOWN_MAP_KINDS``.
      multi_label: sigmoid multi-label evaluation (per-digit metrics) instead of single-label.
      num_classes: M.
      top_k: k of the top-k classification accuracy (5, capped at M).
      box_accuracy: also count every grid threshold (single-label: MaxBoxAcc, MaxBoxAccV2 and
        the GT-known / Top-1 Loc curves; multi-label: the localisation curve). False keeps only
        the fixed-threshold metrics (config field ``eval_box_accuracy``, default True).
      normalize: how a map becomes a score map in [0, 1] (``boxes.normalize``): "minmax"
        (the WSOL protocol, default) or "max" (``max(m, 0) / max(m)``, the paper's §3.1).
      box_backend: box extraction backend, "auto" | "native" | "xla" (config ``box_backend``).
    """
    image_size: tuple[int, int]
    upsample: str = "bicubic"
    region_size: int = 3
    cam_threshold: float = 0.2
    iou_threshold: float = 0.5
    num_box_thresholds: int = 1000
    map_kinds: tuple[str, ...] = MAP_KINDS
    multi_label: bool = False
    num_classes: int = 10
    top_k: int = 5
    box_accuracy: bool = True
    normalize: str = "minmax"
    box_backend: str = "auto"

    def __post_init__(self):
        unknown = [k for k in self.map_kinds if k not in KNOWN_MAP_KINDS]
        if unknown or not self.map_kinds:
            raise ValueError(f"map_kinds must be a non-empty subset of {KNOWN_MAP_KINDS}, "
                             f"got {self.map_kinds}")
        if self.multi_label and any(k.startswith("infocam_plus") for k in self.map_kinds):
            raise ValueError("multi-label evaluation supports map_kinds ('cam', 'infocam'), "
                             f"got {self.map_kinds}")
        if not 0.0 <= self.cam_threshold < 1.0:
            raise ValueError(f"cam_threshold must be in [0, 1), got {self.cam_threshold}")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.num_box_thresholds < 1:
            raise ValueError(f"num_box_thresholds must be >= 1, got {self.num_box_thresholds}")
        if self.num_classes < 1 or self.region_size < 1:
            raise ValueError(f"num_classes and region_size must be >= 1, got "
                             f"{self.num_classes}, {self.region_size}")
        if self.normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got "
                             f"{self.normalize!r}")
        if self.box_backend not in BOX_BACKENDS:
            raise ValueError(f"box_backend must be one of {BOX_BACKENDS}, got "
                             f"{self.box_backend!r}")

    @classmethod
    def from_config(cls, config, **overrides) -> EvalSettings:
        """Reads the evaluation fields of a config (docs/interfaces.md); ``overrides`` win."""
        multi_label = bool(config.multi_label)
        default_kinds = MULTI_LABEL_MAP_KINDS if multi_label else MAP_KINDS
        fields = {
            "image_size": tuple(int(s) for s in config.image_size),
            "upsample": str(config.upsample),
            "region_size": int(config.region_size),
            "cam_threshold": float(config.cam_threshold),
            "iou_threshold": float(config.iou_threshold),
            "num_box_thresholds": int(config.num_box_thresholds),
            "map_kinds": tuple(config.get("map_kinds", default_kinds)),
            "box_accuracy": bool(config.get("eval_box_accuracy", True)),
            "multi_label": multi_label,
            "num_classes": int(config.num_classes),
            "normalize": str(config.get("normalize", "minmax")),
            "box_backend": str(config.get("box_backend", "auto")),
        }
        fields.update(overrides)
        return cls(**fields)

    @property
    def box_thresholds(self) -> np.ndarray:
        """The score-threshold grid, float64 ``[T]``."""
        return np.arange(0.0, 1.0, 1.0 / self.num_box_thresholds)

    @property
    def reading(self) -> str:
        """One line naming how the maps were read, e.g. for a table's caption."""
        return (f"score maps {NORMALIZE_NAMES[self.normalize]} ({self.upsample} upsampling), "
                f"fixed threshold {self.cam_threshold:g}, IoU >= {self.iou_threshold:g}")
