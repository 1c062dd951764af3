r"""Eval throughput: the jitted JAX eval step vs the authors' way (PyTorch + per-image OpenCV).

Both sides do the same work on the same synthetic batches, on the same CPU:
ResNet50 forward at 224x224 (layer4 stride 1 -> 14x14x2048 features, 200 classes as CUB),
CAM, infoCAM and infoCAM+ (image rival from the logits) of the ground-truth class, bicubic
upsampling to 224, min-max normalisation, and for every score threshold of the grid
``np.arange(0, 1, 1/T)`` plus the paper's 0.2: the boxes of the largest contour and of every
contour, IoU against the ground-truth boxes, and the counters of top-1/top-5 classification,
GT-known / Top-1 Loc, MaxBoxAcc and MaxBoxAccV2.

* JAX: ``infocam_jax.evaluation.step.make_eval_step`` (one jitted/pmapped step per batch, everything
  on device, counters accumulated on device), pmapped over one XLA CPU device per core
  (``--jax_devices``).
* Authors' way: a PyTorch ResNet50 (written here, torchvision layout) under ``no_grad``, then a
  Python loop over images, map kinds and thresholds calling ``cv2.resize``,
  ``cv2.threshold``, ``cv2.findContours`` and ``cv2.boundingRect`` (Choe et al.'s protocol).

Prints images/s of both and their ratio (JAX / PyTorch+OpenCV; > 1 means JAX is faster), the
time split (forward vs the rest), and, as both sides run the same weights (the Flax variables
are copied into the PyTorch model), the largest difference between their metrics. Batches are
timed interleaved (JAX, PyTorch, JAX, ...) so that load from other processes hits both sides
alike. Compile time is reported separately and not counted. ``--protocol paper`` drops the
threshold grid (MaxBoxAcc / MaxBoxAccV2) and keeps the paper's metrics at threshold 0.2.

  python benchmarks/eval_pipeline.py                 # ~ 3-4 minutes on 2 CPU cores
  python benchmarks/eval_pipeline.py --batch_size 16 --num_batches 2 --num_thresholds 100
  python benchmarks/eval_pipeline.py --protocol paper
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout

# ----------------------------------------------------------------------------- data

def make_batches(num_batches, batch_size, size, num_classes, max_boxes=2, seed=0):
    """Synthetic eval batches (docs/interfaces.md keys): random images and boxes."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(num_batches):
        x0 = rng.integers(0, size // 2, (batch_size, max_boxes))
        y0 = rng.integers(0, size // 2, (batch_size, max_boxes))
        x1 = np.minimum(x0 + rng.integers(16, size // 2, (batch_size, max_boxes)), size - 1)
        y1 = np.minimum(y0 + rng.integers(16, size // 2, (batch_size, max_boxes)), size - 1)
        box_valid = np.ones((batch_size, max_boxes), bool)
        box_valid[:, 1:] = rng.uniform(size=(batch_size, max_boxes - 1)) < 0.3
        batches.append({
            "image": rng.normal(size=(batch_size, size, size, 3)).astype(np.float32),
            "label": rng.integers(0, num_classes, batch_size).astype(np.int32),
            "boxes": np.stack([x0, y0, x1, y1], -1).astype(np.int32),
            "box_valid": box_valid,
            "valid": np.ones(batch_size, bool),
        })
    return batches


# ----------------------------------------------------------------------------- JAX side

class JaxPipeline:
    """The jitted eval step of ``infocam_jax.evaluation.step`` on all local devices."""

    def __init__(self, args):
        import jax

        from infocam_jax import boxes, models
        from infocam_jax import devices
        from infocam_jax.evaluation import settings, step
        self.jax, self.devices, self.step_lib = jax, devices, step
        # The eval step's boxes use backend="auto": the compiled kernel on CPU when it loaded.
        self.box_backend = boxes.resolve_backend("auto")
        self.settings = settings.EvalSettings(
            image_size=(args.image_size, args.image_size), upsample="bicubic",
            region_size=args.region_size, cam_threshold=0.2, iou_threshold=0.5,
            num_box_thresholds=args.num_thresholds, num_classes=args.num_classes,
            box_accuracy=args.protocol == "full")
        model = models.create("resnet50", args.num_classes)
        self.variables = jax.jit(lambda k: model.init(
            {"params": k}, np.zeros((1, args.image_size, args.image_size, 3), np.float32),
            train=False))(jax.random.PRNGKey(0))
        self.d = jax.local_device_count()
        self.step = step.make_eval_step(self.settings, model, num_devices=self.d)
        self.p_vars = devices.replicate(self.variables, self.d)
        forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
        self.forward = lambda x: jax.block_until_ready(forward(self.variables, x))
        self.reset()

    def reset(self):
        self.counts = self.devices.replicate(self.step_lib.init_counts(self.settings), self.d)

    def run(self, batch):
        d = self.d
        sharded = {k: v.reshape((d, len(v) // d) + v.shape[1:]) for k, v in batch.items()}
        self.counts = self.jax.block_until_ready(self.step(self.p_vars, sharded, self.counts))

    def results(self):
        summed = self.jax.tree_util.tree_map(lambda x: np.asarray(x).sum(0), self.counts)
        return self.step_lib.finalize(self.settings, summed)


# ----------------------------------------------------------------------------- PyTorch side

def build_torch_resnet50(num_classes):
    """torchvision-layout ResNet50 (v1.5) with layer4 stride 1, returning (logits, features)."""
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride, downsample):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(width * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = (nn.Sequential(nn.Conv2d(cin, width * 4, 1, stride, bias=False),
                                             nn.BatchNorm2d(width * 4)) if downsample else None)

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            identity = self.downsample(x) if self.downsample is not None else x
            return self.relu(out + identity)

    class ResNet50(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            cin, layers = 64, []
            for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 1)):
                mods = []
                for i in range(blocks):
                    mods.append(Bottleneck(cin, width, stride if i == 0 else 1, i == 0))
                    cin = width * 4
                layers.append(nn.Sequential(*mods))
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            self.fc = nn.Linear(2048, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            features = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(features.mean((2, 3))), features

    return ResNet50().eval()


def _cv2_boxes(scoremap_u8, threshold, height, width):
    """Authors' protocol: threshold, contours, (largest box, all boxes) for one map."""
    import cv2
    thr = int(threshold * np.max(scoremap_u8))
    _, mask = cv2.threshold(scoremap_u8, thr, 255, cv2.THRESH_BINARY)
    contours = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    if not contours:
        zero = np.zeros((1, 4), np.int64)
        return zero, zero
    rects = []
    for c in contours:
        x, y, w, h = cv2.boundingRect(c)
        rects.append((x, y, min(x + w, width - 1), min(y + h, height - 1)))
    rects = np.asarray(rects, np.int64)
    largest = int(np.argmax([cv2.contourArea(c) for c in contours]))
    return rects[largest:largest + 1], rects


def _np_iou(a, b):
    """Inclusive-pixel IoU, ``a [P,4]`` x ``b [G,4]`` -> ``[P,G]``."""
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0 + 1, 0, None) * np.clip(iy1 - iy0 + 1, 0, None)
    area = lambda x: (x[:, 2] - x[:, 0] + 1) * (x[:, 3] - x[:, 1] + 1)
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


class TorchPipeline:
    """The authors' way: PyTorch forward, then per image / map kind / threshold OpenCV boxes."""

    KINDS = ("cam", "infocam", "infocam_plus")

    def __init__(self, args, state_dict=None):
        import cv2
        import torch
        self.cv2, self.torch = cv2, torch
        torch.set_num_threads(os.cpu_count())
        self.model = build_torch_resnet50(args.num_classes)
        if state_dict is not None:
            self.model.load_state_dict(state_dict)
        self.size, self.r, self.m = args.image_size, args.region_size, args.num_classes
        grid = np.arange(0, 1, 1 / args.num_thresholds) if args.protocol == "full" else []
        self.thresholds = np.concatenate([[0.2], grid])
        self.ones = np.ones((self.r, self.r), np.float32)
        self.anchor = ((self.r - 1) // 2, (self.r - 1) // 2)  # "same" region sum
        self.forward_seconds = 0.0
        self.reset()

    def reset(self):
        t = len(self.thresholds) - 1
        self.counts = {"n": 0, "top1": 0, "top5": 0}
        self.per_kind = {k: {"gt_known": 0, "top1_loc": 0, "box_acc": np.zeros(t),
                             "box_acc_v2": np.zeros((3, t))} for k in self.KINDS}
        self.forward_seconds = 0.0

    def run(self, batch):
        cv2, torch = self.cv2, self.torch
        t0 = time.perf_counter()
        with torch.no_grad():
            x = torch.from_numpy(batch["image"]).permute(0, 3, 1, 2).contiguous()
            logits, features = self.model(x)
        logits, features = logits.numpy(), features.numpy()       # [B,M], [B,K,h,w]
        self.forward_seconds += time.perf_counter() - t0
        weight = self.model.fc.weight.detach().numpy()            # [M,K]
        total, m, size = weight.sum(0), self.m, self.size
        for i in range(len(logits)):
            y = int(batch["label"][i])
            order = np.argsort(-logits[i])
            top1 = order[0] == y
            self.counts["n"] += 1
            self.counts["top1"] += int(top1)
            self.counts["top5"] += int(y in order[:5])
            rival = int(np.argmin(logits[i]))
            f = features[i]
            weights = {"cam": weight[y], "infocam": (m * weight[y] - total) / (m - 1),
                       "infocam_plus": weight[y] - weight[rival]}
            gt = batch["boxes"][i][batch["box_valid"][i]]
            for kind, w in weights.items():
                cam = np.tensordot(w, f, axes=1).astype(np.float32)
                if kind != "cam":
                    cam = cv2.filter2D(cam, -1, self.ones, anchor=self.anchor,
                                       borderType=cv2.BORDER_CONSTANT)
                up = cv2.resize(cam, (size, size), interpolation=cv2.INTER_CUBIC)
                up = up - up.min()
                up = up / up.max() if up.max() > 0 else up
                u8 = (up * 255).astype(np.uint8)
                pk = self.per_kind[kind]
                for t, thr in enumerate(self.thresholds):
                    largest, every = _cv2_boxes(u8, thr, size, size)
                    best_l = _np_iou(largest, gt).max()
                    if t == 0:
                        ok = best_l >= 0.5
                        pk["gt_known"] += int(ok)
                        pk["top1_loc"] += int(ok and top1)
                        continue
                    best_m = _np_iou(every, gt).max()
                    pk["box_acc"][t - 1] += best_l >= 0.5
                    pk["box_acc_v2"][:, t - 1] += best_m >= np.array([0.3, 0.5, 0.7])

    def results(self):
        n = self.counts["n"]
        results = {"top1_cls": self.counts["top1"] / n, "top5_cls": self.counts["top5"] / n}
        for kind, pk in self.per_kind.items():
            results[f"{kind}/gt_known_loc"] = pk["gt_known"] / n
            results[f"{kind}/top1_loc"] = pk["top1_loc"] / n
            if len(self.thresholds) > 1:
                results[f"{kind}/max_box_acc"] = float(pk["box_acc"].max()) / n
                results[f"{kind}/max_box_acc_v2"] = float(np.mean(pk["box_acc_v2"].max(1))) / n
        return results


def torch_state_dict_from_flax(variables):
    """The Flax ResNet50's variables as a torchvision-layout state dict (same weights)."""
    import torch
    params, stats = variables["params"], variables.get("batch_stats", {})
    sd = {}

    def conv(prefix, p):
        sd[prefix + ".weight"] = torch.from_numpy(
            np.ascontiguousarray(np.asarray(p["kernel"]).transpose(3, 2, 0, 1)))

    def bn(prefix, p, s):
        sd[prefix + ".weight"] = torch.from_numpy(np.asarray(p["scale"]).copy())
        sd[prefix + ".bias"] = torch.from_numpy(np.asarray(p["bias"]).copy())
        sd[prefix + ".running_mean"] = torch.from_numpy(np.asarray(s["mean"]).copy())
        sd[prefix + ".running_var"] = torch.from_numpy(np.asarray(s["var"]).copy())
        sd[prefix + ".num_batches_tracked"] = torch.tensor(0)

    conv("conv1", params["conv1"])
    bn("bn1", params["bn1"], stats["bn1"])
    for name in params:
        if not name.startswith("layer"):
            continue
        layer, block = name[len("layer"):].split("_")
        prefix = f"layer{layer}.{block}"
        p, s = params[name], stats[name]
        for j in (1, 2, 3):
            conv(f"{prefix}.conv{j}", p[f"conv{j}"])
            bn(f"{prefix}.bn{j}", p[f"bn{j}"], s[f"bn{j}"])
        if "downsample_conv" in p:
            conv(f"{prefix}.downsample.0", p["downsample_conv"])
            bn(f"{prefix}.downsample.1", p["downsample_bn"], s["downsample_bn"])
    sd["fc.weight"] = torch.from_numpy(np.ascontiguousarray(np.asarray(params["head"]["kernel"]).T))
    sd["fc.bias"] = torch.from_numpy(np.asarray(params["head"]["bias"]).copy())
    return sd


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_batches", type=int, default=2)
    parser.add_argument("--jax_devices", type=int, default=os.cpu_count(),
                        help="XLA CPU devices (default: one per core). The box passes are "
                             "sequential loops, one per device, so one device per core lets "
                             "them use every core; ignored when XLA_FLAGS already sets it.")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--num_classes", type=int, default=200)
    parser.add_argument("--region_size", type=int, default=4)
    parser.add_argument("--num_thresholds", type=int, default=100)
    parser.add_argument("--protocol", choices=("full", "paper"), default="full",
                        help="full: + MaxBoxAcc/MaxBoxAccV2 over the threshold grid; paper: "
                             "GT-known / Top-1 Loc at 0.2 and classification only.")
    parser.add_argument("--no_same_weights", action="store_true",
                        help="Do not copy the Flax weights into the PyTorch model.")
    args = parser.parse_args()
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:  # must precede the JAX import
        os.environ["XLA_FLAGS"] = (
            f"{flags} --xla_force_host_platform_device_count={args.jax_devices}").strip()

    batches = make_batches(args.num_batches + 1, args.batch_size, args.image_size,
                           args.num_classes)
    warmup, batches = batches[0], batches[1:]
    n = args.num_batches * args.batch_size
    jax_side = JaxPipeline(args)
    t0 = time.perf_counter()
    jax_side.run(warmup)
    compile_s = time.perf_counter() - t0
    state_dict = None
    if not args.no_same_weights:
        try:
            state_dict = torch_state_dict_from_flax(jax_side.variables)
        except (KeyError, ValueError) as e:  # layout drift: still time, without parity check
            print(f"(could not copy weights into PyTorch: {e!r}; timing only)")
    torch_side = TorchPipeline(args, state_dict)
    torch_side.run(warmup)
    jax_side.reset()
    torch_side.reset()
    # Interleaved, so that load from other processes hits both sides alike.
    jax_s = torch_s = jax_fwd_s = 0.0
    for batch in batches:
        t0 = time.perf_counter()
        jax_side.run(batch)
        jax_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        torch_side.run(batch)
        torch_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        jax_side.forward(batch["image"])
        jax_fwd_s += time.perf_counter() - t0
    jax_res, torch_res = jax_side.results(), torch_side.results()
    grid = (f"{args.num_thresholds} score thresholds + 0.2" if args.protocol == "full"
            else "threshold 0.2 only")
    print(f"protocol {args.protocol}: {n} images ({args.num_batches} batches of "
          f"{args.batch_size}), {args.image_size}x{args.image_size}, {grid}, 3 map kinds, "
          f"{os.cpu_count()} CPU threads, {jax_side.d} JAX device(s), boxes backend "
          f"{jax_side.box_backend}")
    print(f"JAX jitted eval step   : {n / jax_s:8.2f} images/s  ({jax_s:.1f} s; of which the "
          f"forward alone takes ~{jax_fwd_s:.1f} s; compile {compile_s:.1f} s not counted)")
    print(f"PyTorch + OpenCV loop  : {n / torch_s:8.2f} images/s  ({torch_s:.1f} s; forward "
          f"{torch_side.forward_seconds:.1f} s, maps + boxes + metrics "
          f"{torch_s - torch_side.forward_seconds:.1f} s)")
    print(f"ratio JAX / authors' way: {torch_s / jax_s:.2f}x")
    if state_dict is not None:
        keys = [k for k in torch_res if k in jax_res]
        diff = max(abs(jax_res[k] - torch_res[k]) for k in keys)
        print(f"same weights: max |JAX - PyTorch| over {len(keys)} metrics = {diff:.4f}")


if __name__ == "__main__":
    main()
