"""Throughput of the backbones (jitted forward and train step) side by side with PyTorch eager.

    python benchmarks/models.py                       # both backbones, batch 8, 224x224
    python benchmarks/models.py --arch=resnet50 --rounds=5 --dtype=bfloat16
    python benchmarks/models.py --variants=explicit,taps,xla --cpu_convolutions=ynn
    python benchmarks/models.py --arch=deit_small --batch=8,32 # DeiT-S vs the PyTorch twin

JAX variants (``--variants``), each its own runner in the same run:

* ``explicit``: the library's XLA:CPU path (``conv_impl="explicit"``, what ``"auto"`` picks on
  CPU): max-pooling without select-and-scatter, kernel gradients of 1x1 convolutions as one
  matmul, those of k x k ones from XLA's convolution under ``--cpu_convolutions=eigen`` and as
  one matmul (row-shifted for stride 1) otherwise (``models/layers.py``).
* ``matmul``: every kernel gradient as the one matmul.
* ``taps``: the path before issue 20: every kernel gradient as kh*kw matmuls, one per tap.
* ``xla``: plain autodiff of XLA's convolution and ``flax.linen.max_pool`` (``conv_impl="xla"``).

``matmul`` and ``taps`` are rebuilt here by patching ``layers`` while they compile.

DeiT (``deit_tiny`` / ``deit_small`` / ``deit_base``, token-GAP head, position embeddings for
``--size``) has no convolution but its patch embedding, so the variants do not apply: it runs
one JAX runner, ``jax``, against ``benchmarks/torch_nets.py``'s DeiT (timm's blocks, attention
through ``F.scaled_dot_product_attention`` as timm's fused path; the same parameter count,
checked before timing).

``--cpu_convolutions`` picks the XLA:CPU convolution library for the whole process (XLA reads
it once, at start-up): ``eigen`` (``xla_cpu.use_eigen_convolutions()``, what the launchers
set) or ``ynn`` (this jaxlib's default). Compare the two with two runs, each against PyTorch.

For each backbone the JAX and PyTorch measurements alternate within every round (the machine
is shared, so only ratios measured together mean anything); the median over rounds is
printed as images/s with the JAX/PyTorch ratio. The train step is SGD with momentum 0.9 on
softmax cross-entropy, BatchNorm in training mode. The PyTorch networks are written here
(torchvision is not needed); they are skipped when torch is not installed. Results go to
stdout only.
"""
import contextlib
import functools
import gc
import os
import pathlib
import statistics
import sys
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from infocam_jax import models  # noqa: E402  pylint: disable=wrong-import-position
from infocam_jax.models import xla_cpu
from infocam_jax.models import layers  # noqa: E402  pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
DEIT_ARCHS = ("deit_tiny", "deit_small", "deit_base")
flags.DEFINE_list("arch", ["resnet50", "vgg16_gap"], "backbones to measure (resnet50, "
                  "vgg16_gap, deit_tiny, deit_small, deit_base).")
flags.DEFINE_list("batch", ["8"], "batch sizes, each measured in turn (e.g. 8,32).")
flags.DEFINE_integer("size", 224, "square input size.")
flags.DEFINE_integer("num_classes", 200, "classes of the head.")
flags.DEFINE_integer("rounds", 3, "alternating measurement rounds (median is reported).")
flags.DEFINE_integer("iters", 2, "steps per measurement.")
flags.DEFINE_string("dtype", "float32", "JAX compute dtype (bfloat16 changes results).")
flags.DEFINE_list("variants", ["explicit", "matmul", "taps"], "JAX variants to compare "
                  "(taps, matmul, explicit, xla; see the module docstring), each measured as "
                  "its own runner.")
flags.DEFINE_enum("cpu_convolutions", "eigen", ["eigen", "ynn"],
                  "XLA:CPU convolution library for this process (see the module docstring).")
flags.DEFINE_bool("torch", True, "also measure PyTorch eager when torch is importable.")


# --- JAX ---------------------------------------------------------------------------------------

def jax_steps(arch, x, y, conv_impl):
    """Returns (forward(), train_step()) closures that run one jitted step each and block."""
    extra = {"img_size": FLAGS.size} if arch in DEIT_ARCHS else {}
    model = models.create(arch, FLAGS.num_classes, dtype=FLAGS.dtype, conv_impl=conv_impl,
                          **extra)
    variables = jax.jit(model.init)(jax.random.key(0), x[:1])
    has_bn = "batch_stats" in variables
    tx = optax.sgd(0.01, momentum=0.9)
    # The train step donates its state: give it its own copy of the buffers.
    params = jax.tree_util.tree_map(jnp.copy, variables["params"])
    state = {"params": params,
             "batch_stats": jax.tree_util.tree_map(jnp.copy, variables.get("batch_stats", {})),
             "opt": tx.init(params)}

    @jax.jit
    def forward(variables, x):
        return model.apply(variables, x, train=False)

    def loss_fn(params, batch_stats, x, y):
        v = {"params": params, **({"batch_stats": batch_stats} if has_bn else {})}
        if has_bn:
            (logits, _), upd = model.apply(v, x, train=True, mutable=["batch_stats"])
            batch_stats = upd["batch_stats"]
        else:
            logits, _ = model.apply(v, x, train=True)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, batch_stats

    def train_step(state, x, y):
        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"], state["batch_stats"], x, y)
        updates, opt = tx.update(grads, state["opt"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "batch_stats": stats,
                "opt": opt}, loss

    train_step_donated = jax.jit(train_step, donate_argnums=(0,))
    holder = {"state": state}

    def run_forward():
        jax.block_until_ready(forward(variables, x))

    def run_train():
        holder["state"], loss = train_step_donated(holder["state"], x, y)
        jax.block_until_ready(loss)

    return run_forward, run_train


def _kernel_grad_taps(x, g, kernel_shape, strides, padding):
    """The kernel gradient before issue 20: kh*kw matmuls [C, n] @ [n, O], row-shifted for
    stride 1 (kh row slices of the padded input against kw column-shifted copies of g)."""
    kh, kw = kernel_shape
    ph, pw = layers._pair(padding)  # pylint: disable=protected-access
    c, o = x.shape[-1], g.shape[-1]
    b, h, w = g.shape[:3]
    xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0))) if ph or pw else x
    matmul = functools.partial(jnp.matmul, preferred_element_type=jnp.float32)
    taps = []
    if strides == 1:
        wp = xp.shape[2]
        shifted = [jnp.pad(g, ((0, 0), (0, 0), (j, wp - w - j), (0, 0))).reshape(-1, o)
                   for j in range(kw)]
        for i in range(kh):
            rows = jnp.transpose(jax.lax.slice_in_dim(xp, i, i + h, axis=1).reshape(-1, c))
            taps += [matmul(rows, shifted[j]) for j in range(kw)]
    else:
        g2 = g.reshape(-1, o)
        for i in range(kh):
            for j in range(kw):
                window = jax.lax.slice(xp, (0, i, j, 0),
                                       (b, i + strides * (h - 1) + 1,
                                        j + strides * (w - 1) + 1, c), (1, strides, strides, 1))
                taps.append(matmul(jnp.transpose(window.reshape(-1, c)), g2))
    return jnp.stack(taps).reshape(kh, kw, c, o)


@contextlib.contextmanager
def _patched_kernel_grad(kernel_grad):
    """Patches models.layers' kernel gradient while runners compile: always ``kernel_grad``
    (or the library's matmul when None), never XLA's convolution."""
    saved = layers._kernel_grad, layers._xla_kernel_grad  # pylint: disable=protected-access
    layers._kernel_grad = kernel_grad or saved[0]  # pylint: disable=protected-access
    layers._xla_kernel_grad = lambda kernel: False  # pylint: disable=protected-access
    try:
        yield
    finally:
        layers._kernel_grad, layers._xla_kernel_grad = saved  # pylint: disable=protected-access


def jax_variant(arch, x, y, variant):
    """(forward, train) runners of one variant, compiled now (the patch only acts on tracing)."""
    if variant not in ("taps", "matmul", "explicit", "xla"):
        raise ValueError(f"unknown variant {variant!r}: taps, matmul, explicit or xla")
    context = (_patched_kernel_grad(_kernel_grad_taps if variant == "taps" else None)
               if variant in ("taps", "matmul") else contextlib.nullcontext())
    with context:
        fwd, train = jax_steps(arch, x, y, "xla" if variant == "xla" else "explicit")
        fwd()
        train()
    return fwd, train


# --- PyTorch -----------------------------------------------------------------------------------

def torch_steps(arch, x, y):
    import torch  # pylint: disable=import-outside-toplevel
    from torch import nn  # pylint: disable=import-outside-toplevel

    import torch_nets  # pylint: disable=import-outside-toplevel
    net = torch_nets.build(arch, FLAGS.num_classes, **(
        {"img_size": FLAGS.size} if arch in DEIT_ARCHS else {}))
    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    ty = torch.from_numpy(y.astype(np.int64))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def run_forward():
        net.eval()
        with torch.no_grad():
            net(tx)

    def run_train():
        net.train()
        opt.zero_grad()
        logits, _ = net(tx)
        nn.functional.cross_entropy(logits, ty).backward()
        opt.step()

    return run_forward, run_train


def _check_same_size(arch, x):
    """ValueError unless ours and the PyTorch twin of ``arch`` have equal parameter counts."""
    import torch_nets  # pylint: disable=import-outside-toplevel
    model = models.create(arch, FLAGS.num_classes, img_size=FLAGS.size)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.asarray(x[:1]))
    ours = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(shapes["params"]))
    net = torch_nets.build(arch, FLAGS.num_classes, img_size=FLAGS.size)
    theirs = sum(p.numel() for p in net.parameters())
    if ours != theirs:
        raise ValueError(f"arch {arch!r}: {ours} parameters here, {theirs} in the PyTorch twin")
    print(f"{arch}: {ours:,} parameters on both sides", flush=True)


def _rate(fn, iters, batch):
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return iters * batch / (time.perf_counter() - start)


def _measure(arch: str, batch: int, have_torch: bool) -> None:
    """Times ``arch`` at ``batch``: every JAX runner and PyTorch alternating within each round;
    prints the medians (img/s) and the ratios, then the load average."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, FLAGS.size, FLAGS.size, 3)).astype(np.float32)
    y = rng.integers(0, FLAGS.num_classes, batch).astype(np.int32)
    if arch in DEIT_ARCHS:  # no convolution variants (module docstring)
        runners = {"jax": jax_steps(arch, jnp.asarray(x), jnp.asarray(y), "explicit")}
    else:
        runners = {f"jax[{v}]": jax_variant(arch, jnp.asarray(x), jnp.asarray(y), v)
                   for v in FLAGS.variants}
    if have_torch:
        runners["torch"] = torch_steps(arch, x, y)
        if arch in DEIT_ARCHS:
            _check_same_size(arch, x)
    for fwd, train in runners.values():  # warm-up / compile
        fwd()
        train()
    rates = {(lib, kind): [] for lib in runners for kind in ("forward", "train")}
    for _ in range(FLAGS.rounds):
        for kind, idx in (("forward", 0), ("train", 1)):
            for lib, fns in runners.items():
                rates[(lib, kind)].append(_rate(fns[idx], FLAGS.iters, batch))
    for kind in ("forward", "train"):
        for lib in runners:
            if lib == "torch":
                continue
            j = statistics.median(rates[(lib, kind)])
            line = f"{arch:10s} b{batch:<3d} {kind:8s} {lib:14s} {j:7.2f} img/s"
            if have_torch:
                t = statistics.median(rates[("torch", kind)])
                line += f"   torch eager {t:7.2f} img/s   ratio jax/torch {j / t:5.2f}x"
            print(line, flush=True)
    print(f"  ({arch}, batch {batch} done: {_load()})", flush=True)
    # Free this batch's networks, optimiser states and executables before the next one (DeiT-S
    # at batch 32 next to batch 8's leftovers ran out of memory on a 23 GB shared machine).
    runners.clear()
    jax.clear_caches()
    gc.collect()


def _load() -> str:
    """The 1 / 5 / 15-minute load averages and the UTC time, for the printed figures."""
    one, five, fifteen = os.getloadavg()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} at {stamp}"


def main(argv):
    del argv
    os.environ[xla_cpu.CHOICE_ENV] = FLAGS.cpu_convolutions
    xla_cpu.use_eigen_convolutions()
    try:
        import torch  # pylint: disable=import-outside-toplevel,unused-import
        have_torch = FLAGS.torch
        torch_info = f"torch {torch.__version__} threads={torch.get_num_threads()}"
    except ImportError:
        have_torch, torch_info = False, "torch not installed"
    batches = [int(b) for b in FLAGS.batch]
    if not batches or min(batches) < 1:
        raise ValueError(f"--batch must list positive batch sizes, got {FLAGS.batch}")
    print(f"jax {jax.__version__} {jax.devices()[0].platform} dtype={FLAGS.dtype}; {torch_info}; "
          f"batch {','.join(map(str, batches))}, {FLAGS.size}x{FLAGS.size}, median of "
          f"{FLAGS.rounds} rounds x {FLAGS.iters} steps; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; {_load()}")
    for arch in FLAGS.arch:
        for batch in batches:
            _measure(arch, batch, have_torch)
    print(f"end: {_load()}", flush=True)


if __name__ == "__main__":
    app.run(main)
