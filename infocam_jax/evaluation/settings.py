"""The evaluation protocol's static settings: which maps, how they become boxes, which grid.

``EvalSettings`` is hashable: it is baked into the compiled eval step (``step.make_eval_step``
caches one compiled step per settings, model and device count).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from infocam_jax import metrics
from infocam_jax.maps import posthoc
from infocam_jax.metrics import deletion_insertion
from infocam_jax.metrics import faithfulness as faithfulness_lib

# The one list of map kinds and their display names (tables, figures and drivers read these).
MAP_KINDS = ("cam", "infocam", "infocam_plus")
MULTI_LABEL_MAP_KINDS = ("cam", "infocam")
# The CAM family: infoCAM+ with the image rival (the paper's) and with the region rival (Eq. 3),
# and CAM summed over the R x R region without a subtraction term (the paper's Table 5 ablation:
# R on, subtraction off).
CAM_FAMILY_KINDS = MAP_KINDS + ("infocam_plus_region", "cam_region")
# Post-hoc maps of the model (``infocam_jax.maps.posthoc``), single-label evaluation only.
POSTHOC_MAP_KINDS = posthoc.METHOD_NAMES + posthoc.ATTENTION_METHODS
# ... of which these need a transformer (attention rollout, TS-CAM's map; not in the defaults).
ATTENTION_MAP_KINDS = posthoc.ATTENTION_METHODS
KNOWN_MAP_KINDS = CAM_FAMILY_KINDS + POSTHOC_MAP_KINDS
DISPLAY_NAMES = {"cam": "CAM", "infocam": "infoCAM", "infocam_plus": "infoCAM+",
                 "infocam_plus_region": "infoCAM+ (region rival)", "cam_region": "CAM (R x R sum)",
                 **posthoc.DISPLAY_NAMES}
# Faithfulness metrics of the eval step (``evaluation.faithfulness_counts``): "confidence" = average
# drop and increase in confidence; "road" = ROAD most- and least-relevant-first; "deletion",
# "insertion" = RISE's AUCs (``metrics.deletion_insertion``); "complexity" = mean |map|;
# "arcc" = ARCC and coherency (``metrics.arcc``).
FAITHFULNESS_METRICS = ("confidence", "road", "deletion", "insertion", "complexity", "arcc")
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
      posthoc_layer: module path of the post-hoc maps' layer (``posthoc``'s ``layer=``; config
        ``posthoc_layer``, default "features", the map GAP consumes).
      posthoc_chunk_size: perturbed copies of each image per forward pass of the perturbation
        maps (Score-CAM, ...; config ``posthoc_chunk_size``).
      faithfulness: subset of ``FAITHFULNESS_METRICS`` counted for every map kind (config
        ``eval_faithfulness``, default none; single-label only). Each costs extra forward
        passes per map kind: "confidence" one, "road" one per percentile and a CG solve,
        "deletion" / "insertion" ``causal_steps + 1`` at most, "complexity" none, "arcc"
        the kind's maps of B images again plus ROAD at ``metrics.arcc.ARCC_PERCENTILES``.
      road_morf_percentiles, road_lerf_percentiles: ROAD's percentiles (``faithfulness``; the
        defaults (80,) and (20,) are pytorch-grad-cam's: they remove 20 % and 80 %).
      road_noise: ROAD imputation noise (0.01); road_seed: its PRNG seed.
      causal_steps: deletion / insertion steps S (``ceil(HW / S)`` pixels each; 20).
      deletion_baseline, insertion_baseline: "zeros" | "blur" (RISE's: zeros, blur).
      causal_chunk_size: deletion / insertion curve points per forward pass (4).
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
    posthoc_layer: str = posthoc.DEFAULT_LAYER
    posthoc_chunk_size: int = posthoc.DEFAULT_CHUNK_SIZE
    faithfulness: tuple[str, ...] = ()
    road_morf_percentiles: tuple[float, ...] = faithfulness_lib.DEFAULT_MORF_PERCENTILES
    road_lerf_percentiles: tuple[float, ...] = faithfulness_lib.DEFAULT_LERF_PERCENTILES
    road_noise: float = faithfulness_lib.DEFAULT_NOISE
    road_seed: int = 0
    causal_steps: int = deletion_insertion.DEFAULT_STEPS
    deletion_baseline: str = deletion_insertion.DEFAULT_BASELINES["deletion"]
    insertion_baseline: str = deletion_insertion.DEFAULT_BASELINES["insertion"]
    causal_chunk_size: int = 4

    def __post_init__(self):
        for name in ("map_kinds", "faithfulness", "road_morf_percentiles",
                     "road_lerf_percentiles"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        unknown = [k for k in self.map_kinds if k not in KNOWN_MAP_KINDS]
        if unknown or not self.map_kinds:
            raise ValueError(f"map_kinds must be a non-empty subset of {KNOWN_MAP_KINDS}, "
                             f"got {self.map_kinds}")
        if self.multi_label and any(k not in MULTI_LABEL_MAP_KINDS for k in self.map_kinds):
            raise ValueError(f"multi-label evaluation supports map_kinds {MULTI_LABEL_MAP_KINDS}, "
                             f"got {self.map_kinds}")
        unknown = [m for m in self.faithfulness if m not in FAITHFULNESS_METRICS]
        if unknown or len(set(self.faithfulness)) != len(self.faithfulness):
            raise ValueError(f"faithfulness must be distinct names from {FAITHFULNESS_METRICS}, "
                             f"got {self.faithfulness}")
        if self.multi_label and self.faithfulness:
            raise ValueError("faithfulness metrics need single-label (softmax) evaluation, got "
                             f"multi_label=True with faithfulness={self.faithfulness}")
        for name in ("road_morf_percentiles", "road_lerf_percentiles"):
            values = getattr(self, name)
            if not values or not all(0 < float(v) < 100 for v in values):
                raise ValueError(f"{name} must be a non-empty tuple in (0, 100), got {values}")
        if not self.road_noise >= 0:
            raise ValueError(f"road_noise must be >= 0, got {self.road_noise}")
        self._check_causal()
        if not isinstance(self.posthoc_layer, str) or not self.posthoc_layer:
            raise ValueError(f"posthoc_layer must be a module path string, got "
                             f"{self.posthoc_layer!r}")
        if isinstance(self.posthoc_chunk_size, bool) or not isinstance(
                self.posthoc_chunk_size, (int, np.integer)) or self.posthoc_chunk_size < 1:
            raise ValueError(f"posthoc_chunk_size must be an int >= 1, got "
                             f"{self.posthoc_chunk_size!r}")
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

    def _check_causal(self) -> None:
        for name in ("causal_steps", "causal_chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("deletion_baseline", "insertion_baseline"):
            if getattr(self, name) not in deletion_insertion.BASELINES:
                raise ValueError(f"{name} must be one of {deletion_insertion.BASELINES}, got "
                                 f"{getattr(self, name)!r}")

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
            "map_kinds": tuple(config.get("map_kinds", ()) or default_kinds),
            "box_accuracy": bool(config.get("eval_box_accuracy", True)),
            "multi_label": multi_label,
            "num_classes": int(config.num_classes),
            "normalize": str(config.get("normalize", "minmax")),
            "box_backend": str(config.get("box_backend", "auto")),
            "posthoc_layer": str(config.get("posthoc_layer", posthoc.DEFAULT_LAYER)),
            "posthoc_chunk_size": int(config.get("posthoc_chunk_size",
                                                 posthoc.DEFAULT_CHUNK_SIZE)),
            "faithfulness": tuple(config.get("eval_faithfulness", ())),
            "road_morf_percentiles": tuple(float(p) for p in config.get(
                "road_morf_percentiles", faithfulness_lib.DEFAULT_MORF_PERCENTILES)),
            "road_lerf_percentiles": tuple(float(p) for p in config.get(
                "road_lerf_percentiles", faithfulness_lib.DEFAULT_LERF_PERCENTILES)),
        }
        for name in ("causal_steps", "deletion_baseline", "insertion_baseline",
                     "causal_chunk_size"):
            if name in config:
                fields[name] = config[name]
        fields.update(overrides)
        return cls(**fields)

    @property
    def posthoc_kinds(self) -> tuple[str, ...]:
        """The post-hoc kinds among ``map_kinds``."""
        return tuple(k for k in self.map_kinds if k in POSTHOC_MAP_KINDS)

    def posthoc_options(self, kind: str) -> dict:
        """Keyword options of ``posthoc.compute(kind, ...)``: the layer, and the chunk size for
        the methods that take one (``posthoc.registry.applicable_options``)."""
        return posthoc.registry.applicable_options(
            kind, {"layer": self.posthoc_layer, "chunk_size": int(self.posthoc_chunk_size)})

    @property
    def box_thresholds(self) -> np.ndarray:
        """The score-threshold grid, float64 ``[T]``."""
        return np.arange(0.0, 1.0, 1.0 / self.num_box_thresholds)

    @property
    def reading(self) -> str:
        """One line naming how the maps were read, e.g. for a table's caption."""
        return (f"score maps {NORMALIZE_NAMES[self.normalize]} ({self.upsample} upsampling), "
                f"fixed threshold {self.cam_threshold:g}, IoU >= {self.iou_threshold:g}")
