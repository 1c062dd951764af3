r"""One prepared accelerator check: throughput, memory and versions in a few minutes.

    python benchmarks/device_check.py --out=DIR            # on the GPU machine, <= ~8 minutes
    python benchmarks/device_check.py --out=DIR --smoke    # same code path, CPU, tiny shapes

Writes ``DIR/device_check.json`` (every figure, rewritten after each measurement, so a run cut
short keeps what it measured) and ``DIR/device_check.md`` (the same as tables). Measures:

* ResNet50 and VGG16-GAP (``infocam_jax.models``): forward (``train=False``) and train-step
  images/s at each ``--batches`` in float32 and bfloat16. The train step is the library's
  per-device ``train_state.train_step`` under its ``pmap`` wrapper on one device (softmax
  cross-entropy, SGD with Nesterov momentum), what ``train.py`` runs.
* The same networks in PyTorch eager (``benchmarks/torch_nets.py``; cuDNN autotuning on,
  channels-last, ``torch.autocast`` bfloat16 for the bf16 rows) when torch imports and sees
  the device, for the JAX/PyTorch ratio.
* The full eval step (forward, CAM / infoCAM / infoCAM+, bicubic upsampling, box extraction
  over the threshold grid, metric counters) in images/s, for each box backend the library
  offers (probed: ``boxes.largest_box(..., backend=...)`` and a backend field of the eval
  settings), and box extraction alone per backend.
* Post-hoc maps (``infocam_jax.maps.posthoc``: Grad-CAM, HiResCAM, Grad-CAM++, XGrad-CAM,
  LayerCAM, Eigen-CAM on the GAP input; Score-CAM on the 64-channel stem, ``chunk_size`` 64)
  in images/s, JAX only (pytorch-grad-cam is compared on CPU by
  ``benchmarks/posthoc_vs_gradcam.py``). Smoke: Grad-CAM and Score-CAM only.
* Memory: XLA's compiled-buffer estimate per step (``Compiled.memory_analysis()``: arguments
  + outputs + temporaries) and the device allocator's peak so far (``Device.memory_stats()``,
  cumulative over the run); PyTorch's ``max_memory_allocated`` per measurement.
* jax, jaxlib, flax, optax, numpy, torch, Python versions; device kind and count.

Each measurement is a compile (timed separately), ``--warmup`` untimed steps and up to
``--iters`` timed steps (stopping early after ``--max_measure_s``). Measurements run in order
of importance; once ``--budget_s`` seconds have passed, the rest are listed as skipped.

Needs only jax, flax, optax, numpy (and torch for the ratios): no ml_collections, grain,
tensorflow-datasets, array-record or tensorboardX (tests/test_device_check.py runs the smoke
check with those imports blocked).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import platform
import sys
import time
import traceback
from typing import Any, Callable

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing
sys.path.insert(0, str(HERE))         # torch_nets

ARCHS = ("resnet50", "vgg16_gap")
DTYPES = ("float32", "bfloat16")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--smoke", action="store_true",
                   help="CPU, tiny shapes, VGG16-GAP only: every measurement's code path in "
                        "about 30 CPU-seconds")
    p.add_argument("--budget_s", type=float, default=None,
                   help="stop starting measurements after this many seconds (default 420; "
                        "smoke 120)")
    p.add_argument("--batches", default=None, help="comma list (default 128,64; smoke 2)")
    p.add_argument("--size", type=int, default=None, help="square input (default 224; smoke 32)")
    p.add_argument("--num_classes", type=int, default=200)
    p.add_argument("--iters", type=int, default=None, help="timed steps (default 10; smoke 1)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps after compiling "
                   "(default 2; smoke 0)")
    p.add_argument("--max_measure_s", type=float, default=6.0,
                   help="stop timing a measurement after this long")
    p.add_argument("--num_thresholds", type=int, default=None,
                   help="MaxBoxAcc score thresholds of the eval step (default 100; smoke 10)")
    p.add_argument("--no_torch", action="store_true", help="skip the PyTorch measurements")
    args = p.parse_args(argv)
    smoke = args.smoke
    defaults = dict(budget_s=120.0 if smoke else 420.0, batches="2" if smoke else "128,64",
                    size=32 if smoke else 224, iters=1 if smoke else 10,
                    warmup=0 if smoke else 2, num_thresholds=10 if smoke else 100)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.batches = [int(b) for b in str(args.batches).split(",") if b]
    if smoke:
        args.num_classes = min(args.num_classes, 5)
    if not args.batches or min(args.batches) < 1 or args.size < 32 or args.iters < 1:
        raise SystemExit("--batches must be positive, --size >= 32, --iters >= 1")
    return args


# ----------------------------------------------------------------------------- bookkeeping

class Report:
    """Accumulates results; ``save()`` rewrites the JSON and Markdown files."""

    def __init__(self, out: pathlib.Path, args: argparse.Namespace):
        self.out = out
        self.start = time.perf_counter()
        self.data: dict[str, Any] = {
            "args": {k: v for k, v in vars(args).items()}, "env": {}, "models": [],
            "eval": [], "boxes": [], "posthoc": [], "skipped": [], "errors": [], "notes": []}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def save(self) -> None:
        self.data["elapsed_s"] = round(self.elapsed(), 1)
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "device_check.json", "w") as f:
            json.dump(self.data, f, indent=2, sort_keys=True, default=str)
        with open(self.out / "device_check.md", "w") as f:
            f.write(markdown(self.data))


def _fmt(value, spec=".1f", none="-"):
    return none if value is None else format(value, spec)


def _mib(n):
    return None if n is None else n / 2**20


def _table(title: str, header: str, rows, cells) -> list[str]:
    """Lines of a Markdown section: a blank line, ``## title``, a blank line, ``header``, its
    separator and one line per row ``r`` of ``rows`` from the list ``cells(r)``."""
    rule = "|" + "---|" * (header.count("|") - 1)
    return (["", f"## {title}", "", header, rule]
            + ["| " + " | ".join(str(c) for c in cells(r)) + " |" for r in rows])


def markdown(data: dict) -> str:
    """The JSON report as Markdown tables."""
    env = data["env"]
    lines = ["# Device check", "",
             f"{env.get('device_kind', '?')} x{env.get('device_count', '?')} "
             f"({env.get('platform', '?')}); jax {env.get('jax')}, jaxlib {env.get('jaxlib')}, "
             f"flax {env.get('flax')}, torch {env.get('torch', 'not installed')}; "
             f"{'SMOKE RUN (CPU, tiny shapes: not a benchmark)' if data['args']['smoke'] else ''}"
             f" {data.get('elapsed_s', 0):.0f} s in all."]

    def model_cells(r):
        jx, tc = r.get("jax") or {}, r.get("torch") or {}
        ratio = (jx["images_per_s"] / tc["images_per_s"]
                 if jx.get("images_per_s") and tc.get("images_per_s") else None)
        return [r["arch"], r["dtype"], r["batch"],
                f"{r['kind']}{' (' + r['conv_impl'] + ')' if r.get('conv_impl') else ''}",
                _fmt(jx.get("images_per_s")), _fmt(tc.get("images_per_s")), _fmt(ratio, ".2f"),
                _fmt(jx.get("compile_s")), _fmt(_mib(jx.get("xla_bytes")), ".0f"),
                _fmt(_mib(jx.get("device_peak_bytes")), ".0f"),
                _fmt(_mib(tc.get("peak_bytes")), ".0f")]

    lines += _table("Backbones (images/s; ratio = JAX / PyTorch eager)",
                    "| network | dtype | batch | step | JAX img/s | PyTorch img/s | ratio "
                    "| JAX compile s | XLA step MiB | device peak MiB | torch peak MiB |",
                    data["models"], model_cells)
    if data["eval"]:
        lines += _table(
            "Full eval step (forward + CAM family + boxes + counters)",
            "| network | dtype | batch | box backend | img/s | compile s | XLA step MiB |",
            data["eval"], lambda r: [r["arch"], r["dtype"], r["batch"], r["backend"],
                                     _fmt(r.get("images_per_s")), _fmt(r.get("compile_s")),
                                     _fmt(_mib(r.get("xla_bytes")), ".0f")])
    if data["boxes"]:
        lines += _table(
            "Box extraction alone (largest box, every threshold)",
            "| batch | size | thresholds | backend | img/s | compile s |",
            data["boxes"], lambda r: [r["batch"], r["size"], r["thresholds"], r["backend"],
                                      _fmt(r.get("images_per_s")), _fmt(r.get("compile_s"))])
    if data.get("posthoc"):
        lines += _table(
            "Post-hoc maps (infocam_jax.maps.posthoc, one target class per image)",
            "| network | batch | method | layer | img/s | compile s | XLA step MiB |",
            data["posthoc"], lambda r: [r["arch"], r["batch"], r["method"], r["layer"],
                                        _fmt(r.get("images_per_s")), _fmt(r.get("compile_s")),
                                        _fmt(_mib(r.get("xla_bytes")), ".0f")])
    for title, key in (("Skipped", "skipped"), ("Errors", "errors"), ("Notes", "notes")):
        if data[key]:
            lines += ["", f"## {title}", ""] + [f"- {x}" for x in data[key]]
    env_lines = [f"- {k}: {v}" for k, v in sorted(env.items())]
    return "\n".join(lines + ["", "## Environment", ""] + env_lines) + "\n"


def timed(fn: Callable[[], Any], *, warmup: int, iters: int, max_s: float,
          batch: int) -> dict:
    """Runs ``fn`` (which blocks until its result is ready) ``warmup`` + up to ``iters`` times.

    Returns {"images_per_s", "step_ms", "iters"} over the timed calls.
    """
    for _ in range(warmup):
        fn()
    n, start = 0, time.perf_counter()
    while n < iters:
        fn()
        n += 1
        if time.perf_counter() - start > max_s:
            break
    dt = time.perf_counter() - start
    return {"images_per_s": n * batch / dt, "step_ms": 1e3 * dt / n, "iters": n}


# ----------------------------------------------------------------------------- JAX side

def env_info(jax) -> dict:
    import flax  # pylint: disable=import-outside-toplevel
    import jaxlib  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    import optax  # pylint: disable=import-outside-toplevel
    dev = jax.devices()[0]
    info = {"jax": jax.__version__, "jaxlib": getattr(jaxlib, "__version__", "?"),
            "flax": flax.__version__, "optax": optax.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": dev.platform,
            "device_kind": dev.device_kind, "device_count": jax.device_count(),
            "host_cpus": os.cpu_count()}
    try:
        backend = jax.extend.backend.get_backend()
        info["platform_version"] = backend.platform_version
    except Exception:  # pylint: disable=broad-except
        pass
    return info


def device_peak_bytes(jax) -> int | None:
    """The allocator's peak bytes in use so far (None where the backend keeps no stats)."""
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # pylint: disable=broad-except
        return None
    return stats.get("peak_bytes_in_use")


def xla_bytes(compiled) -> int | None:
    """Arguments + outputs + temporaries of one compiled step (aliased buffers counted once)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # pylint: disable=broad-except
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - getattr(m, "alias_size_in_bytes", 0))


def _compile(fn, *args):
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - start


class JaxBench:
    """Compiles and times the library's forward pass and train step."""

    def __init__(self, jax, args):
        import numpy as np  # pylint: disable=import-outside-toplevel
        self.jax, self.np, self.args = jax, np, args
        self._variables = {}

    def variables(self, arch):
        """float32 variables of ``arch`` (the same for both compute dtypes), cached."""
        if arch not in self._variables:
            from infocam_jax import models  # pylint: disable=import-outside-toplevel
            jnp = self.jax.numpy
            model = models.create(arch, self.args.num_classes)
            x = jnp.zeros((1, self.args.size, self.args.size, 3), jnp.float32)
            self._variables[arch] = self.jax.jit(model.init)(self.jax.random.key(0), x)
        return self._variables[arch]

    def batch(self, batch):
        rng = self.np.random.default_rng(0)
        x = rng.standard_normal((batch, self.args.size, self.args.size, 3)).astype("float32")
        y = rng.integers(0, self.args.num_classes, batch).astype("int32")
        return x, y

    def forward(self, arch, dtype, batch, conv_impl="auto"):
        from infocam_jax import models  # pylint: disable=import-outside-toplevel
        jax = self.jax
        model = models.create(arch, self.args.num_classes, dtype=dtype, conv_impl=conv_impl)
        variables = self.variables(arch)
        x = jax.device_put(self.batch(batch)[0])
        fwd = jax.jit(lambda v, x: model.apply(v, x, train=False))
        compiled, compile_s = _compile(fwd, variables, x)
        result = timed(lambda: jax.block_until_ready(compiled(variables, x)),
                       warmup=self.args.warmup, iters=self.args.iters,
                       max_s=self.args.max_measure_s, batch=batch)
        return dict(result, compile_s=compile_s, xla_bytes=xla_bytes(compiled),
                    device_peak_bytes=device_peak_bytes(jax))

    def train(self, arch, dtype, batch, conv_impl="auto"):
        import optax  # pylint: disable=import-outside-toplevel

        from infocam_jax import losses, models  # pylint: disable=import-outside-toplevel
        from infocam_jax import devices  # pylint: disable=import-outside-toplevel
        from infocam_jax.train import state as ts  # pylint: disable=import-outside-toplevel
        jax = self.jax
        model = models.create(arch, self.args.num_classes, dtype=dtype, conv_impl=conv_impl,
                              axis_name=ts.AXIS_NAME)
        variables = jax.tree_util.tree_map(self.np.asarray, self.variables(arch))
        tx = optax.sgd(0.01, momentum=0.9, nesterov=True)
        state = ts.create_train_state(variables, tx)

        def loss_fn(logits, b):
            return losses.loss("softmax", logits, b["label"])

        step = ts.parallelize(functools.partial(
            ts.train_step, model=model, tx=tx, loss_fn=loss_fn, multi_label=False))
        x, y = self.batch(batch)
        to_device = jax.pmap(lambda t: t)
        sharded = to_device(devices.shard({"image": x, "label": y}, 1))
        key = devices.replicate(jax.random.key(0))
        holder = {"state": devices.replicate(state)}
        compiled, compile_s = _compile(step, holder["state"], sharded, key)

        def run():
            holder["state"], metrics = compiled(holder["state"], sharded, key)
            jax.block_until_ready(metrics)

        result = timed(run, warmup=self.args.warmup, iters=self.args.iters,
                       max_s=self.args.max_measure_s, batch=batch)
        return dict(result, compile_s=compile_s, xla_bytes=xla_bytes(compiled),
                    device_peak_bytes=device_peak_bytes(jax))


# ----------------------------------------------------------------------------- eval step

def box_backends(notes: list | None = None) -> list[str]:
    """Usable backends of ``boxes.largest_box`` ("auto" left out: it is one of the others).
    Unavailable ones (e.g. the compiled kernel not built) are left out, with the reason
    appended to ``notes``."""
    from infocam_jax import boxes  # pylint: disable=import-outside-toplevel
    usable = []
    for name in boxes.BACKENDS:
        if name == "auto":
            continue
        try:
            boxes.resolve_backend(name)
            usable.append(name)
        except RuntimeError as e:
            if notes is not None:
                notes.append(f"box backend {name!r} unavailable: {e}")
    return usable


def bench_eval(jax, bench: JaxBench, arch, dtype, batch, backend) -> dict:
    import numpy as np  # pylint: disable=import-outside-toplevel

    from infocam_jax import models  # pylint: disable=import-outside-toplevel
    from infocam_jax import devices  # pylint: disable=import-outside-toplevel
    from infocam_jax.evaluation import settings as settings_lib, step as step_lib  # pylint: disable=import-outside-toplevel
    args = bench.args
    settings = settings_lib.EvalSettings(
        image_size=(args.size, args.size), upsample="bicubic", region_size=4,
        cam_threshold=0.2, iou_threshold=0.5, num_box_thresholds=args.num_thresholds,
        num_classes=args.num_classes, box_accuracy=True, box_backend=backend)
    model = models.create(arch, args.num_classes, dtype=dtype)
    step = step_lib.make_eval_step(settings, model, num_devices=1)
    rng = np.random.default_rng(1)
    s = args.size
    x0 = rng.integers(0, s // 2, (batch, 1))
    y0 = rng.integers(0, s // 2, (batch, 1))
    host_batch = {
        "image": rng.standard_normal((batch, s, s, 3)).astype(np.float32),
        "label": rng.integers(0, args.num_classes, batch).astype(np.int32),
        "boxes": np.concatenate([x0, y0, x0 + s // 3, y0 + s // 3], -1)[:, None].astype(
            np.int32),
        "box_valid": np.ones((batch, 1), bool), "valid": np.ones(batch, bool)}
    p_vars = devices.replicate(bench.variables(arch), 1)
    p_batch = devices.replicate(host_batch, 1)
    holder = {"counts": devices.replicate(step_lib.init_counts(settings), 1)}
    compiled, compile_s = _compile(step, p_vars, p_batch, holder["counts"])

    def run():
        holder["counts"] = compiled(p_vars, p_batch, holder["counts"])
        jax.block_until_ready(holder["counts"])

    result = timed(run, warmup=args.warmup, iters=args.iters, max_s=args.max_measure_s,
                   batch=batch)
    return dict(result, compile_s=compile_s, xla_bytes=xla_bytes(compiled))


def bench_boxes(jax, args, batch, backend) -> dict:
    import numpy as np  # pylint: disable=import-outside-toplevel

    from infocam_jax import boxes  # pylint: disable=import-outside-toplevel
    rng = np.random.default_rng(2)
    small = rng.uniform(size=(batch, args.size // 16, args.size // 16)).astype(np.float32)
    maps = boxes.scoremaps(jax.numpy.asarray(small), (args.size, args.size))
    thresholds = np.arange(0.0, 1.0, 1.0 / args.num_thresholds)
    fn = jax.jit(lambda m: boxes.largest_box(m, thresholds, backend=backend))
    compiled, compile_s = _compile(fn, maps)
    result = timed(lambda: jax.block_until_ready(compiled(maps)), warmup=args.warmup,
                   iters=args.iters, max_s=args.max_measure_s, batch=batch)
    return dict(result, compile_s=compile_s)


POSTHOC_LAYERS = {"scorecam": {"resnet50": "bn1", "vgg16_gap": "conv1_1"}}


def posthoc_methods(smoke: bool) -> tuple[str, ...]:
    """The post-hoc methods measured (smoke: one gradient method and Score-CAM)."""
    from infocam_jax.maps import posthoc  # pylint: disable=import-outside-toplevel
    return ("gradcam", "scorecam") if smoke else posthoc.METHOD_NAMES


def bench_posthoc(jax, bench: JaxBench, arch, batch, method) -> dict:
    """One post-hoc method's maps for ``batch`` images (Score-CAM: at most 4 images)."""
    from infocam_jax import models  # pylint: disable=import-outside-toplevel
    from infocam_jax.maps import posthoc
    args = bench.args
    layer = POSTHOC_LAYERS.get(method, {}).get(arch, posthoc.DEFAULT_LAYER)
    if method == "scorecam":
        batch = min(batch, 4)
    options = {"chunk_size": 64} if method == "scorecam" else {}
    model = models.create(arch, args.num_classes)
    x, y = bench.batch(batch)
    x, y = jax.device_put(x), jax.device_put(y)
    fn = jax.jit(lambda v, x, t: posthoc.compute(method, model, v, x, t, layer=layer,
                                                 **options))
    variables = bench.variables(arch)
    compiled, compile_s = _compile(fn, variables, x, y)
    result = timed(lambda: jax.block_until_ready(compiled(variables, x, y)),
                   warmup=args.warmup, iters=args.iters, max_s=args.max_measure_s,
                   batch=batch)
    return dict(result, batch=batch, layer=layer, compile_s=compile_s,
                xla_bytes=xla_bytes(compiled))


# ----------------------------------------------------------------------------- PyTorch side

class TorchBench:
    """PyTorch eager forward / train step of the same networks (None when unavailable)."""

    def __init__(self, args, want_cuda: bool):
        import torch  # pylint: disable=import-outside-toplevel
        self.torch, self.args = torch, args
        self.device = torch.device("cuda" if want_cuda else "cpu")
        if want_cuda:
            torch.backends.cudnn.benchmark = True  # autotuned, as XLA autotunes its convs

    def _sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def run(self, arch, dtype, batch, kind) -> dict:
        import torch_nets  # pylint: disable=import-outside-toplevel
        torch = self.torch
        net = torch_nets.build(arch, self.args.num_classes).to(self.device)
        net = net.to(memory_format=torch.channels_last)
        s = self.args.size
        x = torch.randn(batch, 3, s, s, device=self.device).to(
            memory_format=torch.channels_last)
        y = torch.randint(0, self.args.num_classes, (batch,), device=self.device)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        amp = functools.partial(torch.autocast, self.device.type, dtype=torch.bfloat16,
                                enabled=dtype == "bfloat16")
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

        def forward():
            net.eval()
            with torch.no_grad(), amp():
                net(x)
            self._sync()

        def train():
            net.train()
            opt.zero_grad(set_to_none=True)
            with amp():
                logits, _ = net(x)
            torch.nn.functional.cross_entropy(logits.float(), y).backward()
            opt.step()
            self._sync()

        fn = forward if kind == "forward" else train
        start = time.perf_counter()
        fn()  # first call: cuDNN autotuning, allocator warm-up
        first_s = time.perf_counter() - start
        result = timed(fn, warmup=self.args.warmup, iters=self.args.iters,
                       max_s=self.args.max_measure_s, batch=batch)
        peak = torch.cuda.max_memory_allocated() if self.device.type == "cuda" else None
        return dict(result, first_call_s=first_s, peak_bytes=peak)


def make_torch(args, platform_name: str, report: Report):
    if args.no_torch:
        report.data["notes"].append("PyTorch skipped (--no_torch).")
        return None
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        report.data["notes"].append(f"PyTorch not importable ({e}): no ratios.")
        return None
    report.data["env"]["torch"] = torch.__version__
    cuda = bool(torch.cuda.is_available())
    report.data["env"]["torch_cuda"] = torch.version.cuda if cuda else None
    if platform_name == "cpu":
        report.data["env"]["torch_threads"] = torch.get_num_threads()
        return TorchBench(args, want_cuda=False)
    if not cuda:
        report.data["notes"].append(f"torch {torch.__version__} sees no CUDA device: no "
                                    "PyTorch ratios on this accelerator.")
        return None
    report.data["env"]["torch_device"] = torch.cuda.get_device_name(0)
    return TorchBench(args, want_cuda=True)


# ----------------------------------------------------------------------------- plan

def plan(args) -> list[tuple]:
    """Measurements in order of importance: (kind, arch, dtype, batch, extra)."""
    if args.smoke:
        # VGG16-GAP compiles several times faster than ResNet50 on CPU; the library's train
        # step with ResNet50 (BatchNorm, bfloat16) is covered by tests/test_models.py.
        grid = [("vgg16_gap", "bfloat16")]
        eval_arch = ("vgg16_gap", "float32")
    else:
        grid = [(a, d) for a in ARCHS for d in reversed(DTYPES)]
        eval_arch = ("resnet50", "float32")
    tasks = []
    first, rest = args.batches[0], args.batches[1:]
    for arch, dtype in grid:
        tasks.append(("model", arch, dtype, first, None))
    tasks.append(("eval", eval_arch[0], eval_arch[1], min(args.batches), None))
    tasks.append(("boxes", None, None, first, None))
    tasks.append(("posthoc", eval_arch[0], eval_arch[1], min(args.batches), None))
    # The other convolution path on the heaviest backward (which one "auto" should pick).
    tasks.append(("model_conv_impl", grid[0][0], grid[0][1], first, None))
    for batch in rest:
        for arch, dtype in grid:
            tasks.append(("model", arch, dtype, batch, None))
    return tasks


def _record_error(report, what, exc):
    report.data["errors"].append(f"{what}: {type(exc).__name__}: {exc}")
    traceback.print_exc()


def _emit(report, section: str, row: dict) -> None:
    """Appends ``row`` to ``report.data[section]``, rewrites the report, prints the row."""
    report.data[section].append(row)
    report.save()
    print(json.dumps(row, default=str), flush=True)


def _conv_impls(kind: str) -> list[str]:
    """``["auto"]`` for the model rows; for ``model_conv_impl`` the path "auto" does not pick."""
    if kind == "model":
        return ["auto"]
    from infocam_jax.models import layers  # pylint: disable=import-outside-toplevel
    default = layers.resolve_impl("auto")
    return [next(i for i in ("explicit", "xla") if i != default)]


def _run_models(task, jax, bench, torch_bench, report):
    """Train (and, for the ``model`` rows, forward) steps of JAX and of PyTorch eager."""
    kind, arch, dtype, batch, _ = task
    for impl in _conv_impls(kind):
        for step_kind in ("train", "forward") if kind == "model" else ("train",):
            row = {"arch": arch, "dtype": dtype, "batch": batch, "kind": step_kind,
                   "size": bench.args.size, "conv_impl": None if impl == "auto" else impl}
            try:
                fn = bench.train if step_kind == "train" else bench.forward
                row["jax"] = fn(arch, dtype, batch, conv_impl=impl)
            except Exception as e:  # pylint: disable=broad-except
                _record_error(report, f"jax {arch} {dtype} b{batch} {step_kind}", e)
            if torch_bench is not None and impl == "auto":
                try:
                    row["torch"] = torch_bench.run(arch, dtype, batch, step_kind)
                except Exception as e:  # pylint: disable=broad-except
                    _record_error(report, f"torch {arch} {dtype} b{batch} {step_kind}", e)
            _emit(report, "models", row)


def _emit_each(report, section: str, variants, row_of, measure, what) -> None:
    """One row of ``section`` per variant: ``row_of(v)`` (dict) updated with ``measure(v)``.

    A measurement that raises is recorded as an error named ``what(v)`` and its row skipped.
    """
    for v in variants:
        row = row_of(v)
        try:
            row.update(measure(v))
        except Exception as e:  # pylint: disable=broad-except
            _record_error(report, what(v), e)
            continue
        _emit(report, section, row)


def _run_eval(task, jax, bench, torch_bench, report):
    """The full eval step, once per box backend."""
    del torch_bench
    _, arch, dtype, batch, _ = task
    _emit_each(report, "eval", box_backends(),
               lambda backend: {"arch": arch, "dtype": dtype, "batch": batch, "backend": backend,
                                "thresholds": bench.args.num_thresholds},
               lambda backend: bench_eval(jax, bench, arch, dtype, batch, backend),
               "eval step backend={}".format)


def _run_boxes(task, jax, bench, torch_bench, report):
    """Box extraction alone, once per box backend."""
    del torch_bench
    batch, args = task[3], bench.args
    _emit_each(report, "boxes", box_backends(),
               lambda backend: {"batch": batch, "size": args.size,
                                "thresholds": args.num_thresholds, "backend": backend},
               lambda backend: bench_boxes(jax, args, batch, backend),
               "boxes backend={}".format)


def _run_posthoc(task, jax, bench, torch_bench, report):
    """Each post-hoc method's maps (float32)."""
    del torch_bench
    _, arch, _, batch, _ = task
    _emit_each(report, "posthoc", posthoc_methods(bench.args.smoke),
               lambda method: {"arch": arch, "method": method},
               lambda method: bench_posthoc(jax, bench, arch, batch, method),
               "posthoc {}".format)


_RUNNERS = {"model": _run_models, "model_conv_impl": _run_models, "eval": _run_eval,
            "boxes": _run_boxes, "posthoc": _run_posthoc}


def run_task(task, jax, bench, torch_bench, report):
    """Runs one task of :func:`plan` (its kind picks the runner)."""
    _RUNNERS[task[0]](task, jax, bench, torch_bench, report)


def _start(args):
    """(jax, report, torch bench or None, JAX bench) with the environment recorded."""
    if args.smoke:
        os.environ["JAX_PLATFORMS"] = "cpu"
    # Let PyTorch share the accelerator: JAX would otherwise reserve 75% of its memory.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax  # pylint: disable=import-outside-toplevel

    report = Report(pathlib.Path(args.out), args)
    report.data["env"].update(env_info(jax))
    platform_name = report.data["env"]["platform"]
    if platform_name == "cpu" and not args.smoke:
        report.data["notes"].append("No accelerator: these are CPU figures.")
    if args.smoke:
        report.data["notes"].append("Smoke run: tiny shapes on CPU, one timed step; the "
                                    "figures only show that every measurement runs.")
    torch_bench = make_torch(args, platform_name, report)
    bench = JaxBench(jax, args)
    report.data["env"]["box_backends"] = box_backends(report.data["notes"])
    report.save()
    return jax, report, torch_bench, bench


def main(argv=None) -> dict:
    """Parses the flags, records the environment, runs :func:`plan`'s tasks within the budget
    (the rest listed as skipped), writes and prints the report."""
    args = parse_args(argv)
    jax, report, torch_bench, bench = _start(args)
    for task in plan(args):
        if report.elapsed() > args.budget_s:
            report.data["skipped"].append(
                f"{task[0]} {task[1] or ''} {task[2] or ''} batch {task[3]}: over the "
                f"{args.budget_s:.0f} s budget")
            continue
        run_task(task, jax, bench, torch_bench, report)
    report.save()
    print((report.out / "device_check.md").read_text())
    return report.data


if __name__ == "__main__":
    main()
