"""What the eval step calls beside the model: the model's readout (which features and kernels
make its maps), the classifier kernel and the box backend.

These are the only places that decide them, so every evaluator (``single_label``,
``multi_label``, ``forward``, ``pxap``, ``region_grid``) runs the model, reads the kernel and
extracts boxes the same way.
"""
from __future__ import annotations

from typing import Any

# Network methods whose apply takes ``labels=`` (the class whose maps are read) and returns a
# method output (``models.acol.AcolOutput`` / ``models.spg.SpgOutput``) instead of
# ``(logits, features)``.
LABEL_METHODS = ("acol", "spg")


def box_options(settings) -> dict[str, Any]:
    """Keyword arguments every ``boxes.largest_box`` / ``boxes.max_contour_iou`` call of the
    eval step receives (the one place that passes ``settings.box_backend`` on)."""
    return {"backend": settings.box_backend}


def default_kernel_fn():
    """``models.classifier_kernel`` (imported lazily: evaluation's core needs no model zoo)."""
    from infocam_jax import models  # pylint: disable=import-outside-toplevel
    return models.classifier_kernel


def network_method(model) -> str:
    """The network method of ``model``: a ``models.WSOLNet``'s ``method`` ("cam", "adl",
    "acol", "spg"); "cam" for every other module (the legacy ``ConvGAP`` / ``ResNet50`` are
    CAM / ADL networks, and test stubs return ``(logits, features)``)."""
    method = getattr(model, "method", None)
    return method if method in ("cam", "adl") + LABEL_METHODS else "cam"


def check_model_settings(settings, model) -> None:
    """Raises ValueError naming the method when ``settings`` asks ``model`` for something its
    method does not define: multi-label evaluation of ACoL / SPG (they are single-label
    methods), or post-hoc map kinds of ACoL / SPG (the post-hoc maps read one ``head`` module
    and a ``(logits, features)`` output; use the CAM-family kinds, which fuse the branches)."""
    method = network_method(model)
    if method not in LABEL_METHODS:
        return
    if settings.multi_label:
        raise ValueError(f"method {method!r} is single-label: it cannot be evaluated with "
                         "multi_label=True")
    if settings.posthoc_kinds:
        raise ValueError(f"post-hoc map kinds {list(settings.posthoc_kinds)} are not defined "
                         f"for method {method!r} (its class maps come from several heads); "
                         "use map kinds cam / infocam / infocam_plus / infocam_plus_region")


def forward_readout(model, variables, images, labels=None, *, kernel_fn=None):
    """The model's evaluation forward pass and its readout.

    Args:
      model: a Flax module: an ``infocam_jax.models`` network of any method, or any module whose
        ``apply(variables, images, train=False)`` returns ``(logits [B, M], features
        [B, h, w, K])``.
      variables: its variables.
      images: float ``[B, H, W, C]``.
      labels: int ``[B]`` the classes whose maps will be read, or None. ACoL and SPG are
        applied with ``labels=labels`` (the reference's evaluation calls ``model(images,
        targets, return_cam=True)`` with the ground truth: ACoL's branch B erases that class);
        None -> their own top-1 class. Other methods ignore it.
      kernel_fn: ``variables -> [K, M]`` classifier kernel for ``(logits, features)`` models
        (default ``models.classifier_kernel``); ACoL / SPG read their heads (``models.readout``).

    Returns:
      ``(logits [B, M], models.Readout)``: the main logits (accuracy, prediction, infoCAM+'s
      rival) and the branches whose maps make the method's CAMs with their fusion rule
      (``cams.fused_maps``). ``(logits, features)`` models give one branch
      ``(features, kernel_fn(variables), bias None, logits)``, fusion "single".
    """
    from infocam_jax.methods import network  # pylint: disable=import-outside-toplevel
    method = network_method(model)
    if method in LABEL_METHODS:
        outputs = model.apply(variables, images, train=False, labels=labels)
        return network.main_logits(outputs), network.readout(method, variables, outputs)
    logits, features = model.apply(variables, images, train=False)
    kernel = (kernel_fn or default_kernel_fn())(variables)
    return logits, network.Readout((network.Branch(features, kernel, None, logits),), "single")
