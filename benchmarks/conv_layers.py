"""Per-convolution profile of a backbone's train step: JAX (XLA:CPU) against PyTorch (oneDNN).

    python benchmarks/conv_layers.py --arch=resnet50 --batch=8
    python benchmarks/conv_layers.py --arch=resnet50 --batch=8 --cpu_convolutions=ynn

The convolutions of the backbone are read from the model itself (every ``layers.conv2d`` call
of one training forward, traced with ``jax.eval_shape``) and grouped by shape. For each shape
the three products of a train step are timed alone: the forward, the input gradient (dx) and
the kernel gradient (dw), best of ``--repeats`` after a warm-up, side by side in one process:

* ``explicit``: the library's ``conv_impl="explicit"`` (dw of 1x1 convolutions as one matmul;
  of k x k ones from XLA's convolution under ``eigen``, the one matmul under ``ynn``: see
  ``models/layers.py``);
* ``xla``: plain autodiff of XLA's convolution (``conv_impl="xla"``) for every dw (for 1x1
  convolutions XLA transposes the activations batch-minor first);
* ``torch``: ``torch.nn.functional.conv2d`` and ``aten::convolution_backward`` (one output
  each), PyTorch's CPU kernels.

``--cpu_convolutions`` sets XLA:CPU's convolution library for the process, as in
``benchmarks/models.py``: ``eigen`` (what the launchers set) or ``ynn`` (this jaxlib's default).

Per-step totals weight each shape by how often the network uses it (dx of the stem is not
needed and not counted). Results go to stdout only.
"""
import collections
import functools
import os
import pathlib
import sys
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from infocam_jax import models  # noqa: E402  pylint: disable=wrong-import-position
from infocam_jax.models import xla_cpu
from infocam_jax.models import layers  # noqa: E402  pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string("arch", "resnet50", "backbone (models.create name).")
flags.DEFINE_integer("batch", 8, "batch size.")
flags.DEFINE_integer("size", 224, "square input size.")
flags.DEFINE_integer("repeats", 5, "timed calls per product (the best is reported).")
flags.DEFINE_list("jax", ["explicit", "xla"], "JAX columns (see the docstring).")
flags.DEFINE_enum("cpu_convolutions", "eigen", ["eigen", "ynn"],
                  "XLA:CPU convolution library for this process (see the docstring).")
flags.DEFINE_bool("torch", True, "also time PyTorch when it is importable.")

ConvShape = collections.namedtuple("ConvShape", "x kernel strides padding")


def backbone_convolutions(arch, batch, size):
    """Counter of ConvShape -> uses in one training forward of ``arch`` (no compute)."""
    model = models.create(arch, 200, conv_impl="explicit")
    seen = collections.Counter()
    original = layers.conv2d

    def recording(x, kernel, strides, padding, impl="auto"):
        seen[ConvShape(tuple(x.shape), tuple(kernel.shape), strides,
                       layers._pair(padding))] += 1  # pylint: disable=protected-access
        return original(x, kernel, strides, padding, impl)

    x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
    layers.conv2d = recording
    try:
        jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"],
                                                rngs={"adl": jax.random.key(0),
                                                      "dropout": jax.random.key(1)}),
                       variables, x)
    finally:
        layers.conv2d = original
    return seen


def _best_ms(fn, repeats):
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def jax_times(shape, impl, x, kernel, g, repeats):
    """(forward, dx, dw) milliseconds of one JAX column."""
    conv = lambda x, w: layers.conv2d(x, w, shape.strides, shape.padding, impl)
    fwd = jax.jit(conv)
    dx = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0])
    dw = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])
    return (_best_ms(lambda: fwd(x, kernel).block_until_ready(), repeats),
            _best_ms(lambda: dx(x, kernel, g).block_until_ready(), repeats),
            _best_ms(lambda: dw(x, kernel, g).block_until_ready(), repeats))


def torch_times(shape, x, kernel, g, repeats):
    import torch  # pylint: disable=import-outside-toplevel
    tx = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))
    tw = torch.from_numpy(np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1))))
    tg = torch.from_numpy(np.ascontiguousarray(np.transpose(g, (0, 3, 1, 2))))
    s, p = [shape.strides] * 2, list(shape.padding)
    conv = lambda: torch.nn.functional.conv2d(tx, tw, stride=s, padding=p)
    back = lambda mask: lambda: torch.ops.aten.convolution_backward(
        tg, tx, tw, None, s, p, [1, 1], False, [0, 0], 1, mask)
    with torch.no_grad():
        return (_best_ms(conv, repeats), _best_ms(back([True, False, False]), repeats),
                _best_ms(back([False, True, False]), repeats))


def main(argv):
    del argv
    os.environ[xla_cpu.CHOICE_ENV] = FLAGS.cpu_convolutions
    xla_cpu.use_eigen_convolutions()
    columns = list(FLAGS.jax)
    for column in columns:
        if column not in ("explicit", "xla"):
            raise ValueError(f"unknown --jax column {column!r}: explicit or xla")
    have_torch = False
    if FLAGS.torch:
        try:
            import torch  # pylint: disable=import-outside-toplevel
            have_torch = True
            columns.append("torch")
            print(f"torch {torch.__version__} threads={torch.get_num_threads()}")
        except ImportError:
            print("torch not installed: JAX columns only")
    shapes = backbone_convolutions(FLAGS.arch, FLAGS.batch, FLAGS.size)
    print(f"jax {jax.__version__} (XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}); {FLAGS.arch}, batch {FLAGS.batch}, {FLAGS.size}x{FLAGS.size}: "
          f"{sum(shapes.values())} convolutions, {len(shapes)} shapes; ms, best of "
          f"{FLAGS.repeats}")
    print(f"{'input':>18s} {'kernel':>16s} s  uses | " +
          " | ".join(f"{c:>12s} fwd    dx    dw" for c in columns))
    totals = {c: np.zeros(3) for c in columns}
    rng = np.random.default_rng(0)
    for shape, uses in shapes.items():
        x = rng.standard_normal(shape.x).astype(np.float32)
        kernel = (rng.standard_normal(shape.kernel) * 0.05).astype(np.float32)
        out = jax.eval_shape(lambda x, w, shape=shape: layers.conv2d(
            x, w, shape.strides, shape.padding, "xla"), x, kernel).shape
        g = rng.standard_normal(out).astype(np.float32)
        # The convolution that reads the images: its input gradient is never needed.
        first = shape.x == (FLAGS.batch, FLAGS.size, FLAGS.size, 3)
        row = []
        for column in columns:
            if column == "torch":
                t = np.array(torch_times(shape, x, kernel, g, FLAGS.repeats))
            else:
                t = np.array(jax_times(shape, column, jnp.asarray(x), jnp.asarray(kernel),
                                       jnp.asarray(g), FLAGS.repeats))
            totals[column] += uses * t * np.array([1, 0 if first else 1, 1])
            row.append(" ".join(f"{v:5.1f}" for v in t))
        print(f"{str(shape.x):>18s} {str(shape.kernel):>16s} {shape.strides} {uses:4d} | " +
              " | ".join(f"{'':12s} {r}" for r in row), flush=True)
    print("per train step (uses x ms):")
    for column, t in totals.items():
        line = f"  {column:>12s} fwd {t[0]:7.1f}  dx {t[1]:7.1f}  dw {t[2]:7.1f}  all {t.sum():7.1f}"
        if have_torch and column != "torch":
            line += f"   torch/this {totals['torch'].sum() / t.sum():5.2f}x"
        print(line)


if __name__ == "__main__":
    app.run(main)
