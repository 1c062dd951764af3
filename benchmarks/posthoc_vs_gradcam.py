r"""Post-hoc maps per image: ``infocam_jax.maps.posthoc`` (jitted, batched) beside pytorch-grad-cam.

    python benchmarks/posthoc_vs_gradcam.py                      # ResNet50, batch 16, 224x224
    python benchmarks/posthoc_vs_gradcam.py --methods=gradcam,scorecam --rounds=3
    python benchmarks/posthoc_vs_gradcam.py --size=64 --batch=4 --scorecam_images=1   # quick

For each method both libraries compute the maps of one target class per image on the same CPU,
the two measurements alternating within every round (the machine may be shared, so only the
ratios measured together mean anything); the median over rounds is printed as seconds per
image and the ratio peer / ours (> 1: ours is faster), with the load average before and after.

* Ours: ``posthoc.compute(method, model, variables, images, targets, layer=...)`` under one
  ``jax.jit`` (compiled before timing), the maps at the layer's resolution.
* Peer: the pip ``grad-cam`` package's CAM object called as a user calls it
  (``cam(input_tensor=x, targets=[ClassifierOutputTarget(c), ...])``: its hooks, backward,
  weights, ReLU, min-max scaling and resizing to the input), on the PyTorch twin of the same
  network (``benchmarks/torch_nets.py``) in eval mode. It is loaded through
  ``tests/gradcam_peer.py`` (the torchvision stand-in where torchvision does not load).

Both networks have their own random weights: speed does not depend on the values (the maps'
equality on converted weights is ``tests/test_posthoc.py``). The gradient methods and
Eigen-CAM read the GAP input (``--layer``, default ``features``: ResNet50's last block).
Score-CAM runs one forward pass per channel of its layer, 2048 per image on ``features``
(hours on two cores for a batch of 16), so it reads ``--scorecam_layer`` (default ``bn1``, the
64-channel stem) for ``--scorecam_images`` images, both libraries with ``--scorecam_chunk``
masked images per forward pass. Results go to stdout only.
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

FLAGS = flags.FLAGS
flags.DEFINE_enum("arch", "resnet50", ["resnet50", "vgg16_gap"], "backbone.")
flags.DEFINE_integer("batch", 16, "images per call (gradient methods, Eigen-CAM).")
flags.DEFINE_integer("size", 224, "square input size.")
flags.DEFINE_integer("num_classes", 200, "classes of the head.")
flags.DEFINE_list("methods", ["gradcam", "hirescam", "gradcampp", "xgradcam", "layercam",
                              "eigencam", "scorecam"], "methods to time.")
flags.DEFINE_string("layer", "features", "layer of the gradient methods and Eigen-CAM.")
flags.DEFINE_string("scorecam_layer", "bn1", "Score-CAM's layer (our path; the twin's module "
                    "of the same name).")
flags.DEFINE_integer("scorecam_images", 2, "images of the Score-CAM measurement.")
flags.DEFINE_integer("scorecam_chunk", 32, "masked images per forward pass, both libraries.")
flags.DEFINE_integer("rounds", 3, "alternating measurement rounds (median is reported).")


def _torch_layer(net, path: str):
    """Our layer path -> the twin's module: "features" = the trunk's output, "bn1" = the stem
    BatchNorm (ResNet50) or a conv index (VGG16-GAP ``features.N``)."""
    if path == "features":
        return net.features
    if FLAGS.arch == "resnet50" and path == "bn1":
        return net.features[1]
    raise SystemExit(f"--layer / --scorecam_layer {path!r}: only 'features' and (ResNet50) "
                     "'bn1' are mapped to the PyTorch twin here")


def _ours(method, model, variables, images, targets, layer, **options):
    """A runner that computes our maps once (compiled on the first call) and blocks."""
    import jax  # pylint: disable=import-outside-toplevel

    from infocam_jax.maps import posthoc  # pylint: disable=import-outside-toplevel
    fn = jax.jit(lambda v, x, t: posthoc.compute(method, model, v, x, t, layer=layer,
                                                 **options))
    x, t = jax.device_put(images), jax.device_put(targets)
    compiled = fn.lower(variables, x, t).compile()
    return lambda: jax.block_until_ready(compiled(variables, x, t))


def _peer(pgc, method, net, images, targets, layer, chunk):
    import torch  # pylint: disable=import-outside-toplevel

    import gradcam_peer  # pylint: disable=import-outside-toplevel
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    cam = gradcam_peer.make_cam(pgc, method, net, _torch_layer(net.twin, layer), chunk)
    tgts = gradcam_peer.targets_of(pgc, targets)
    return lambda: cam(input_tensor=x, targets=tgts)


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _torch_net():
    import torch  # pylint: disable=import-outside-toplevel

    import torch_nets  # pylint: disable=import-outside-toplevel

    class Logits(torch.nn.Module):
        """The twin returning only its logits (what the peer's targets read)."""

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


def main(argv):
    del argv
    os.environ.setdefault("TQDM_DISABLE", "1")
    import jax  # pylint: disable=import-outside-toplevel
    import torch  # pylint: disable=import-outside-toplevel

    import gradcam_peer  # pylint: disable=import-outside-toplevel
    from infocam_jax import models  # pylint: disable=import-outside-toplevel
    pgc, note = gradcam_peer.load()
    if pgc is None:
        raise SystemExit(f"pytorch-grad-cam unavailable: {note}")
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
    print("| method | layer | images | ours s/img | pytorch-grad-cam s/img | ratio |")
    print("|---|---|---|---|---|---|")
    for method in FLAGS.methods:
        score = method == "scorecam"
        n = FLAGS.scorecam_images if score else FLAGS.batch
        layer = FLAGS.scorecam_layer if score else FLAGS.layer
        options = {"chunk_size": FLAGS.scorecam_chunk} if score else {}
        ours = _ours(method, model, variables, images[:n], targets[:n], layer, **options)
        peer = _peer(pgc, method, net, images[:n], targets[:n], layer, FLAGS.scorecam_chunk)
        ours()  # first run after compiling
        peer()  # hooks, allocator warm-up
        times = {"ours": [], "peer": []}
        for _ in range(FLAGS.rounds):
            times["ours"].append(_time(ours))
            times["peer"].append(_time(peer))
        t_ours = statistics.median(times["ours"]) / n
        t_peer = statistics.median(times["peer"]) / n
        print(f"| {method} | {layer} | {n} | {t_ours:.4f} | {t_peer:.4f} | "
              f"{t_peer / t_ours:.2f}x |", flush=True)
    load_after = os.getloadavg()
    print(f"load average {load_after[0]:.2f} at end")


if __name__ == "__main__":
    app.run(main)
