r"""Post-hoc maps per image: ``infocam_jax.maps.posthoc`` (jitted, batched) beside its peers.

    python benchmarks/posthoc_vs_gradcam.py                      # every method, ResNet50, 224x224
    python benchmarks/posthoc_vs_gradcam.py --methods=gradcam,scorecam --rounds=3
    python benchmarks/posthoc_vs_gradcam.py --size=64 --batch=4 --perturbation_images=1  # quick

Every registered map that has a peer is timed: pytorch-grad-cam 1.5.7's class
(``tests/gradcam_peer.py``: ``PEER_CLASSES``) or torch-cam 0.5.0's (``TORCHCAM_CLASSES`` below:
Smooth Grad-CAM++, SS-CAM, IS-CAM). For each method both libraries compute the maps of one
target class per image on the same CPU, the two measurements alternating within every round (the
machine may be shared, so only the ratios measured together mean anything); the median over
rounds is printed as seconds per image and the ratio peer / ours (> 1: ours is faster), with the
load average before and after.

* Ours: ``posthoc.compute(method, model, variables, images, targets, layer=..., **options)``
  under one ``jax.jit`` (compiled before timing), the maps at the layer's resolution, with
  XLA:CPU's convolutions on Eigen as the launchers run them (``xla_cpu.use_eigen_convolutions``).
* pytorch-grad-cam: the CAM object called as a user calls it (``cam(input_tensor=x,
  targets=[ClassifierOutputTarget(c), ...])``: its hooks, backward, weights, ReLU, min-max
  scaling and resizing to the input). FinerCAM takes one ``target_idx`` per call, so it runs
  image by image, as its users must.
* Guided backpropagation, Guided Grad-CAM and Deep Feature Factorization (not CAM classes in
  the peer): its ``GuidedBackpropReLUModel`` one image per call (it reads image 0), Guided
  Grad-CAM as its README builds it (its Grad-CAM mask times those guided gradients), and its
  ``DeepFeatureFactorization`` object (forward, NMF with ``--dff_components`` concepts, maps
  scaled to the image); ours: ``compute("guided_backprop" | "guided_gradcam", ...)`` and
  ``deep_feature_factorization`` under ``jax.jit``.
* torch-cam: the extractor on the model's scores (``extractor(class_idx=[...], scores=...)``),
  the forward pass included in the time.

The peers run on the PyTorch twin of the same network (``benchmarks/torch_nets.py``) in eval
mode; each network has its own random weights (speed does not depend on the values; the maps'
equality on converted weights is the parity tests'). The gradient and activation maps read the
GAP input (``--layer``, default ``features``: ResNet50's last block) for ``--batch`` images. The
perturbation maps (Score-CAM, Ablation-CAM, SS-CAM, IS-CAM) run one forward pass per channel
(per sample) of their layer, 2048 channels per image on ``features`` (hours on two cores), so
they read ``--perturbation_layer`` (default ``bn1``, the 64-channel stem) for
``--perturbation_images`` images, both libraries with ``--chunk`` masked images per forward
pass and ``--samples`` noise samples (SS-CAM, IS-CAM, Smooth Grad-CAM++). Results go to stdout.
"""
from __future__ import annotations

import os
import pathlib
import statistics
import sys
import time

from absl import app, flags
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # gradcam_peer, the test suite's peer helper

# our method name -> torch-cam class name (torchcam.methods)
TORCHCAM_CLASSES = {"smoothgradcampp": "SmoothGradCAMpp", "sscam": "SSCAM", "iscam": "ISCAM"}

FLAGS = flags.FLAGS
flags.DEFINE_enum("arch", "resnet50", ["resnet50", "vgg16_gap"], "backbone.")
flags.DEFINE_integer("batch", 16, "images per call (gradient and activation maps).")
flags.DEFINE_integer("size", 224, "square input size.")
flags.DEFINE_integer("num_classes", 200, "classes of the head.")
flags.DEFINE_list("methods", [], "methods to time (default: every registered map with a peer).")
flags.DEFINE_string("layer", "features", "layer of the gradient and activation maps.")
flags.DEFINE_string("perturbation_layer", "bn1", "the perturbation maps' layer (our path; the "
                    "twin's module of the same name).")
flags.DEFINE_integer("perturbation_images", 2, "images of the perturbation maps' measurement.")
flags.DEFINE_integer("chunk", 32, "masked images per forward pass, both libraries.")
flags.DEFINE_integer("samples", 4, "noise samples of SS-CAM, IS-CAM and Smooth Grad-CAM++.")
flags.DEFINE_integer("rounds", 3, "alternating measurement rounds (median is reported).")
flags.DEFINE_integer("dff_components", 16, "Deep Feature Factorization's concepts (the peer's "
                     "default 16).")

# Beyond the CAM classes: our name -> the peer's entry point (``_guided_peer`` / ``_dff_peer``).
EXTRA_PEERS = {"guided_backprop": "GuidedBackpropReLUModel",
               "guided_gradcam": "GradCAM x GuidedBackpropReLUModel",
               "dff": "DeepFeatureFactorization"}


def _torch_layer(net, path: str):
    """Our layer path -> the twin's module: "features" = the trunk's output, "bn1" = the stem
    BatchNorm (ResNet50)."""
    if path == "features":
        return net.features
    if FLAGS.arch == "resnet50" and path == "bn1":
        return net.features[1]
    raise SystemExit(f"--layer / --perturbation_layer {path!r}: only 'features' and (ResNet50) "
                     "'bn1' are mapped to the PyTorch twin here")


def _compiled(fn, *args):
    """``fn`` under ``jax.jit``, compiled for ``args`` before it is returned, as a runner that
    computes it once and blocks."""
    import jax  # pylint: disable=import-outside-toplevel
    args = tuple(jax.device_put(a) for a in args)
    compiled = jax.jit(fn).lower(*args).compile()
    return lambda: jax.block_until_ready(compiled(*args))


def _ours(method, model, variables, images, targets, layer, **options):
    """Our maps of ``method`` (``posthoc.compute``; ``layer=None``: the method takes none)."""
    from infocam_jax.maps import posthoc  # pylint: disable=import-outside-toplevel
    if layer is not None:
        options = dict(options, layer=layer)
    return _compiled(lambda v, x, t: posthoc.compute(method, model, v, x, t, **options),
                     variables, images, targets)


def _ours_dff(model, variables, images, layer):
    """Our Deep Feature Factorization (the peer's NMF settings: random init, 200 iterations at
    most, tolerance 1e-4)."""
    from infocam_jax.maps import posthoc  # pylint: disable=import-outside-toplevel
    return _compiled(lambda v, x: posthoc.deep_feature_factorization(
        model, v, x, layer=layer, n_components=FLAGS.dff_components), variables, images)


def _grad_cam_peer(pgc, method, net, x, targets, layer):
    import gradcam_peer  # pylint: disable=import-outside-toplevel
    cam = gradcam_peer.make_cam(pgc, method, net, _torch_layer(net.twin, layer), FLAGS.chunk)
    if method == "finercam":
        return (lambda: [cam(x[b:b + 1], target_idx=int(c)) for b, c in enumerate(targets)],
                cam.base_cam.activations_and_grads.release)
    tgts = gradcam_peer.targets_of(pgc, targets)
    return lambda: cam(input_tensor=x, targets=tgts), cam.activations_and_grads.release


def _guided_peer(pgc, net, x, targets, gradcam_layer=None):
    """pytorch-grad-cam's guided backpropagation as its users call it: ``GuidedBackpropReLUModel``
    on one image per call (it reads image 0); with ``gradcam_layer``, Guided Grad-CAM as the
    peer's README builds it (its Grad-CAM mask times the guided gradients). The twin's functional
    ``torch.relu`` calls get the peer's ``GuidedBackpropReLU`` during the call."""
    import torch  # pylint: disable=import-outside-toplevel

    import gradcam_peer  # pylint: disable=import-outside-toplevel
    from pytorch_grad_cam import guided_backprop  # pylint: disable=import-outside-toplevel
    cam = (gradcam_peer.make_cam(pgc, "gradcam", net, _torch_layer(net.twin, gradcam_layer),
                                 FLAGS.chunk) if gradcam_layer else None)
    tgts = gradcam_peer.targets_of(pgc, targets)

    def run():
        relu, torch.relu = torch.relu, guided_backprop.GuidedBackpropReLU.apply
        try:
            gb = np.stack([guided_backprop.GuidedBackpropReLUModel(net, device="cpu")(
                x[b:b + 1].clone(), target_category=int(c)) for b, c in enumerate(targets)])
        finally:
            torch.relu = relu
        if cam is None:
            return gb
        return cam(input_tensor=x, targets=tgts)[..., None] * gb
    return run, (cam.activations_and_grads.release if cam else (lambda: None))


def _dff_peer(net, x, layer):
    """pytorch-grad-cam's ``DeepFeatureFactorization`` (forward, NMF, maps scaled to the image)."""
    from pytorch_grad_cam import DeepFeatureFactorization  # pylint: disable=import-outside-toplevel
    dff = DeepFeatureFactorization(net, _torch_layer(net.twin, layer))
    return (lambda: dff(x, n_components=FLAGS.dff_components),
            dff.activations_and_grads.release)


def _torchcam_peer(method, net, x, targets, layer):
    import torchcam.methods  # pylint: disable=import-outside-toplevel
    cls = getattr(torchcam.methods, TORCHCAM_CLASSES[method])
    options = {"num_samples": FLAGS.samples}
    if method != "smoothgradcampp":
        options["batch_size"] = FLAGS.chunk
    extractor = cls(net, target_layer=_torch_layer(net.twin, layer),
                    input_shape=tuple(x.shape[1:]), **options)
    classes = [int(c) for c in targets]

    def run():
        scores = net(x)
        return extractor(class_idx=classes, scores=scores)
    return run, extractor.remove_hooks


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _torch_net():
    import torch  # pylint: disable=import-outside-toplevel

    import torch_nets  # pylint: disable=import-outside-toplevel

    class Logits(torch.nn.Module):
        """The twin returning only its logits (what the peers' targets read)."""

        def __init__(self, twin):
            super().__init__()
            self.twin = twin
            for m in twin.modules():  # in-place ReLUs would overwrite hooked activations
                if isinstance(m, torch.nn.ReLU):
                    m.inplace = False

        def forward(self, x):
            return self.twin(x)[0]

    torch.manual_seed(0)
    return Logits(torch_nets.build(FLAGS.arch, FLAGS.num_classes)).eval()


def _options(method, registry):
    """Our options matching the peer's settings (chunk, samples); the rest default."""
    wanted = {"chunk_size": FLAGS.chunk, "num_samples": FLAGS.samples}
    return registry.applicable_options(method, wanted)


def main(argv):
    del argv
    os.environ.setdefault("TQDM_DISABLE", "1")
    from infocam_jax.models import xla_cpu  # pylint: disable=import-outside-toplevel
    xla_cpu.use_eigen_convolutions()  # as the launchers: before the first computation
    import jax  # pylint: disable=import-outside-toplevel
    import torch  # pylint: disable=import-outside-toplevel

    import gradcam_peer  # pylint: disable=import-outside-toplevel
    from infocam_jax import models  # pylint: disable=import-outside-toplevel
    from infocam_jax.maps import posthoc  # pylint: disable=import-outside-toplevel
    pgc, note = gradcam_peer.load()
    if pgc is None:
        raise SystemExit(f"pytorch-grad-cam unavailable: {note}")
    peers = {**{m: "pytorch-grad-cam" for m in gradcam_peer.PEER_CLASSES},
             **{m: "torch-cam" for m in TORCHCAM_CLASSES},
             **{m: "pytorch-grad-cam" for m in EXTRA_PEERS}}
    methods = FLAGS.methods or ([m for m in posthoc.METHOD_NAMES if m in peers]
                                + list(EXTRA_PEERS))
    unknown = [m for m in methods if m not in peers]
    if unknown:
        raise SystemExit(f"--methods: no peer for {unknown}; with a peer: {sorted(peers)}")
    load_before = os.getloadavg()
    rng = np.random.default_rng(0)
    images = rng.standard_normal((FLAGS.batch, FLAGS.size, FLAGS.size, 3)).astype(np.float32)
    targets = rng.integers(0, FLAGS.num_classes, FLAGS.batch).astype(np.int32)
    model = models.create(FLAGS.arch, FLAGS.num_classes)
    variables = jax.jit(model.init)(jax.random.key(0), images[:1])
    net = _torch_net()
    print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
          f"threads={torch.get_num_threads()}, pytorch-grad-cam ({note}); {FLAGS.arch} "
          f"{FLAGS.size}x{FLAGS.size}; median of {FLAGS.rounds} rounds; load average "
          f"{load_before[0]:.2f} at start", flush=True)
    print("| method | peer | layer | images | ours s/img | peer s/img | ratio |")
    print("|---|---|---|---|---|---|---|")
    for method in methods:
        perturbation = (method not in ("dff", "guided_backprop")
                        and posthoc.registry.get(method).family == "perturbation")
        n = FLAGS.perturbation_images if perturbation else FLAGS.batch
        layer = FLAGS.perturbation_layer if perturbation else FLAGS.layer
        x = torch.from_numpy(np.ascontiguousarray(images[:n].transpose(0, 3, 1, 2)))
        if method == "dff":
            ours = _ours_dff(model, variables, images[:n], layer)
        elif method == "guided_backprop":  # no layer: the gradient at the input
            ours = _ours(method, model, variables, images[:n], targets[:n], None)
        else:
            ours = _ours(method, model, variables, images[:n], targets[:n], layer,
                         **_options(method, posthoc.registry))
        if method == "dff":
            peer, release = _dff_peer(net, x, layer)
        elif method in ("guided_backprop", "guided_gradcam"):
            peer, release = _guided_peer(pgc, net, x, targets[:n],
                                         layer if method == "guided_gradcam" else None)
        elif peers[method] == "torch-cam":
            peer, release = _torchcam_peer(method, net, x, targets[:n], layer)
        else:
            peer, release = _grad_cam_peer(pgc, method, net, x, targets[:n], layer)
        ours()  # first run after compiling
        peer()  # hooks, allocator warm-up
        times = {"ours": [], "peer": []}
        for _ in range(FLAGS.rounds):
            times["ours"].append(_time(ours))
            times["peer"].append(_time(peer))
        release()  # the peer's hooks off the shared twin
        t_ours = statistics.median(times["ours"]) / n
        t_peer = statistics.median(times["peer"]) / n
        name = "Deep Feature Factorization" if method == "dff" else posthoc.DISPLAY_NAMES[method]
        shown = "input" if method == "guided_backprop" else layer
        print(f"| {name} | {peers[method]} | {shown} | {n} | "
              f"{t_ours:.4f} | {t_peer:.4f} | {t_peer / t_ours:.2f}x |", flush=True)
    load_after = os.getloadavg()
    print(f"load average {load_after[0]:.2f} at end")


if __name__ == "__main__":
    app.run(main)
