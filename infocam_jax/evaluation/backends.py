"""What the eval step calls beside the model: the model's readout (which features and kernels
make its maps), the classifier kernel and the box backend.

These are the only places that decide them, so every evaluator (``single_label``,
``multi_label``, ``forward``, ``pxap``, ``region_grid``) runs the model, reads the kernel and
extracts boxes the same way.
"""
from __future__ import annotations

from typing import Any

from infocam_jax import methods, models

def box_options(settings) -> dict[str, Any]:
    """Keyword arguments every ``boxes.largest_box`` / ``boxes.max_contour_iou`` call of the
    eval step receives (the one place that passes ``settings.box_backend`` on)."""
    return {"backend": settings.box_backend}


def default_kernel_fn():
    """``models.classifier_kernel``."""
    return models.classifier_kernel


def model_method(model):
    """The :class:`~infocam_jax.methods.Method` whose head ``model`` carries (a
    ``models.Network`` with a ``method_head``), or None for ``(logits, features)`` networks
    (the GAP head of any method, and test stubs)."""
    head = getattr(model, "method_head", None)
    return None if head is None else methods.get(head.method)


def check_model_settings(settings, model) -> None:
    """Raises ValueError naming the method when ``settings`` asks ``model`` for something its
    method does not define: multi-label evaluation of a single-label method
    (``Method.multi_label``), or post-hoc map kinds where they are not defined
    (``Method.posthoc``: the post-hoc maps read one ``head`` module and a ``(logits,
    features)`` output; use the CAM-family kinds, which fuse the branches)."""
    method = model_method(model)
    if method is None:
        return
    if settings.multi_label and not method.multi_label:
        raise ValueError(f"method {method.name!r} is single-label: it cannot be evaluated with "
                         "multi_label=True")
    if settings.posthoc_kinds and not method.posthoc:
        raise ValueError(f"post-hoc map kinds {list(settings.posthoc_kinds)} are not defined "
                         f"for method {method.name!r} (its class maps come from several heads); "
                         "use the CAM-family map kinds (cam, infocam, infocam_plus, "
                         "infocam_plus_region, cam_region)")


def forward_readout(model, variables, images, labels=None, *, kernel_fn=None):
    """The model's evaluation forward pass and its readout.

    Args:
      model: a Flax module: an ``infocam_jax.models`` network of any method, or any module whose
        ``apply(variables, images, train=False)`` returns ``(logits [B, M], features
        [B, h, w, K])``.
      variables: its variables.
      images: float ``[B, H, W, C]``.
      labels: int ``[B]`` the classes whose maps will be read, or None. Methods that read the
        labels (``Method.reads_labels``) are applied with ``labels=labels`` (the reference's
        evaluation calls ``model(images, targets, return_cam=True)`` with the ground truth: an
        erasing branch erases that class); None -> their own top-1 class.
      kernel_fn: ``variables -> [K, M]`` classifier kernel for ``(logits, features)`` models
        (default ``models.classifier_kernel``); method heads give their own (``Method.readout``).

    Returns:
      ``(logits [B, M], methods.Readout)``: the main logits (accuracy, prediction, infoCAM+'s
      rival) and the branches whose maps make the method's CAMs with their fusion rule
      (``cams.fused_maps``). ``(logits, features)`` models give one branch
      ``(features, kernel_fn(variables), bias None, logits)``, fusion "single".
    """
    method = model_method(model)
    if method is not None:
        kwargs = {"labels": labels} if method.reads_labels else {}
        outputs = model.apply(variables, images, train=False, **kwargs)
        logits, readout = methods.main_logits(outputs), method.readout(variables, outputs)
    else:
        logits, features = model.apply(variables, images, train=False)
        kernel = (kernel_fn or default_kernel_fn())(variables)
        readout = methods.Readout((methods.Branch(features, kernel, None, logits),), "single")
    check_readout_shapes(images, logits, readout)
    return logits, readout


def check_readout_shapes(images, logits, readout) -> None:
    """The model's outputs agree with its ``images [B, H, W, C]`` in batch size: ``logits
    [B, M]`` and every branch's feature maps ``[B, h, w, K]`` (static shapes: checked at trace
    time). A model returning another batch size would otherwise be broadcast or gathered
    against the batch's labels and boxes silently.

    Raises:
      ValueError: naming the output, the expected batch size and the received shape.
    """
    b = images.shape[0]
    outputs = [("logits", logits, 2)] + [
        (f"branch {i} features", branch.features, 4) for i, branch in enumerate(readout.branches)]
    for name, value, rank in outputs:
        if value.ndim != rank or value.shape[0] != b:
            dims = "[B, M]" if rank == 2 else "[B, h, w, K]"
            raise ValueError(f"the model's {name} must have shape {dims} with B = {b} (the "
                             f"images' batch, images shape {tuple(images.shape)}), got shape "
                             f"{tuple(value.shape)}")
