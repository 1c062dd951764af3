"""pytorch-grad-cam (pip ``grad-cam``), the peer of ``infocam_jax.maps.posthoc`` and of ROAD /
the confidence metrics (``infocam_jax.metrics.faithfulness``): import and raw maps.

Used by the tests through the ``grad_cam`` fixture of ``tests/conftest.py`` (which skips with
this module's reason when torch or the peer is absent, and fails the run on CI), and by
``benchmarks/posthoc_vs_gradcam.py`` (which puts ``tests/`` on ``sys.path``).

Install (what works with the CPU torch wheel; ``pip install grad-cam`` pulls a CUDA-built
torchvision whose ``_C.so`` needs ``libtorch_cuda.so`` and fails with "operator torchvision::nms
does not exist")::

    pip install --no-deps "grad-cam==1.5.7" "ttach==0.0.3"
    # its other imports: numpy, tqdm, opencv-python-headless, matplotlib, scipy, scikit-learn

The CAM classes use torchvision nowhere: ``pytorch_grad_cam.utils.image`` imports
``torchvision.transforms`` for ``preprocess_image`` and ``utils.model_targets`` imports it for
the detection target's ``box_iou``. When ``import torchvision`` fails, :func:`load` installs a
stand-in module under that name whose attributes raise if anything touches them, then imports
pytorch_grad_cam. A working torchvision is used as is.

:func:`raw_maps` runs the peer's own ``__call__`` (its ``ActivationsAndGradients`` hooks, target,
backward, ``get_cam_weights`` / ``get_cam_image`` and the ReLU) with ``scale_cam_image`` replaced
by the identity, i.e. the maps before its min-max scaling and resizing.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import types

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")  # Score-CAM's per-image progress bars

# our method name -> pytorch_grad_cam class name
PEER_CLASSES = {"gradcam": "GradCAM", "hirescam": "HiResCAM", "gradcampp": "GradCAMPlusPlus",
                "xgradcam": "XGradCAM", "layercam": "LayerCAM", "scorecam": "ScoreCAM",
                "eigencam": "EigenCAM", "ablationcam": "AblationCAM"}
PEER_CLASSES.update({"gradcamew": "GradCAMElementWise", "eigengradcam": "EigenGradCAM",
                     "segeigencam": "SegEigenCAM", "finercam": "FinerCAM", "kpcacam": "KPCA_CAM",
                     "fem": "FEM", "randomcam": "RandomCAM", "shapleycam": "ShapleyCAM",
                     "fullgrad": "FullGrad"})


class _Unavailable(types.ModuleType):
    """A module whose every attribute is a callable that raises (torchvision stand-in)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def unavailable(*args, **kwargs):
            raise RuntimeError(f"{self.__name__}.{name}: torchvision is not usable here "
                               "(stand-in installed by tests/gradcam_peer.py)")
        return unavailable


def _install_torchvision_stand_in() -> None:
    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional",
                 "torchvision.ops"):
        sys.modules[name] = _Unavailable(name)
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    sys.modules["torchvision"].ops = sys.modules["torchvision.ops"]
    sys.modules["torchvision.transforms"].functional = sys.modules[
        "torchvision.transforms.functional"]


def load():
    """Imports pytorch_grad_cam; returns ``(module or None, note)``.

    ``note`` says what was used ("torchvision x.y" or "torchvision stand-in") or why the peer
    is unavailable.
    """
    try:
        import torch  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        return None, "torch is not installed"
    if importlib.util.find_spec("pytorch_grad_cam") is None:
        return None, ("pytorch_grad_cam is not installed (pip install --no-deps "
                      "grad-cam==1.5.7 ttach==0.0.3)")
    note = None
    try:
        import torchvision  # pylint: disable=import-outside-toplevel
        note = f"torchvision {torchvision.__version__}"
    except Exception as e:  # pylint: disable=broad-except  # ImportError or a RuntimeError
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _install_torchvision_stand_in()
        note = f"torchvision stand-in ({type(e).__name__}: {str(e).splitlines()[0][:80]})"
    try:
        import pytorch_grad_cam  # pylint: disable=import-outside-toplevel
    except Exception as e:  # pylint: disable=broad-except
        return None, f"pytorch_grad_cam failed to import: {type(e).__name__}: {e}"
    return pytorch_grad_cam, note


@contextlib.contextmanager
def _unscaled(pgc):
    """Replaces the peer's ``scale_cam_image`` (min-max scaling + resize) by the identity."""
    # FullGrad's own final scaling too (its per-channel scaling, part of the method, stays).
    modules = [sys.modules[m] for m in ("pytorch_grad_cam.base_cam",
                                        "pytorch_grad_cam.fullgrad_cam") if m in sys.modules]
    originals = [m.scale_cam_image for m in modules]
    for m in modules:
        m.scale_cam_image = lambda cam, target_size=None: np.float32(cam)
    try:
        yield
    finally:
        for m, original in zip(modules, originals):
            m.scale_cam_image = original
    del pgc


def make_cam(pgc, method: str, model, target_layer, batch_size: int | None = None,
             **options):
    """The peer's CAM object for ``method`` (our name) on ``target_layer`` of ``model``;
    ``options`` go to its constructor (e.g. KPCA_CAM's ``kernel``, FEM's ``k``,
    ``reshape_transform``: the peer's, e.g. its ``vit_reshape_transform`` for tokens)."""
    cam = getattr(pgc, PEER_CLASSES[method])(model=model, target_layers=[target_layer], **options)
    if batch_size is not None:
        cam.batch_size = batch_size  # Score-CAM: masked images per forward pass
    return cam


def targets_of(pgc, classes):
    """``ClassifierOutputTarget`` per image (the logit of that class)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # pylint: disable=import-outside-toplevel
    del pgc
    return [ClassifierOutputTarget(int(c)) for c in classes]


def raw_maps(pgc, method: str, model, target_layer, images_nchw, classes,
             batch_size: int | None = None, eigen_smooth: bool = False,
             aug_smooth: bool = False, **options) -> np.ndarray:
    """The peer's maps ``[B, h, w]`` before its scaling and resizing (after its ReLU).

    Args:
      pgc: the module from :func:`load`.
      method: one of ``PEER_CLASSES``.
      model: torch module returning logits ``[B, M]``.
      target_layer: the submodule whose output is the layer.
      images_nchw: float tensor ``[B, C, H, W]``.
      classes: ints ``[B]``.
      batch_size: Score-CAM's masked images per forward pass (peer default 16).
      eigen_smooth: the peer's ``eigen_smooth``.
      aug_smooth: the peer's test-time augmentation (its views' maps flipped back, averaged).
      **options: the CAM class's constructor options (:func:`make_cam`; e.g.
        ``reshape_transform``, None for a CNN layer).
    """
    cam = make_cam(pgc, method, model, target_layer, batch_size, **options)
    try:
        with _unscaled(pgc):
            return np.asarray(cam(input_tensor=images_nchw, targets=targets_of(pgc, classes),
                                  eigen_smooth=eigen_smooth, aug_smooth=aug_smooth))
    finally:
        cam.activations_and_grads.release()


def finer_maps(pgc, model, target_layer, images_nchw, classes, **call_options) -> np.ndarray:
    """The peer's FinerCAM maps ``[B, h, w]`` (unscaled), one image at a time with
    ``target_idx = classes[b]`` (its own choice of the comparison classes)."""
    cam = make_cam(pgc, "finercam", model, target_layer)
    try:
        with _unscaled(pgc):
            return np.concatenate([np.asarray(cam(images_nchw[b:b + 1], target_idx=int(c),
                                                  **call_options))
                                   for b, c in enumerate(classes)])
    finally:
        cam.base_cam.activations_and_grads.release()
