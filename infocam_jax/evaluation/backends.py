"""What the eval step calls beside the model: the classifier kernel and the box backend.

These two are the only places that decide them, so every evaluator (``single_label``,
``multi_label``, ``forward``, ``region_grid``) reads the kernel and extracts boxes the same way.
"""
from __future__ import annotations

from typing import Any


def box_options(settings) -> dict[str, Any]:
    """Keyword arguments every ``boxes.largest_box`` / ``boxes.max_contour_iou`` call of the
    eval step receives (the one place that passes ``settings.box_backend`` on)."""
    return {"backend": settings.box_backend}


def default_kernel_fn():
    """``models.classifier_kernel`` (imported lazily: evaluation's core needs no model zoo)."""
    from infocam_jax import models  # pylint: disable=import-outside-toplevel
    return models.classifier_kernel
