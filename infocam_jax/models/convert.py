"""Import torchvision-format state dicts (``vgg16``, ``resnet50``, ``inception_v3``) into our
Flax variables.

A state dict is a mapping ``name -> array`` with torchvision's names and layouts
(``features.0.weight``, ``layer1.0.conv1.weight``, ``bn1.running_mean``, ...). Conversion:

* Conv weight OIHW -> kernel HWIO; Dense weight [out, in] -> kernel [in, out];
* BatchNorm weight/bias -> params scale/bias, running_mean/var -> batch_stats mean/var
  (``num_batches_tracked`` is ignored);
* the classifier is not imported: VGG's ``classifier.*`` and ResNet's ``fc.*`` are dropped and
  ``head`` (and VGG's new ``conv6``) keep their fresh initialisation for ``num_classes``.
  With ``include_head=True`` the WSOL-style keys ``conv6.*`` (VGG) and ``fc.*`` are imported
  too (needed to compare against a complete PyTorch WSOL network).
* ``inception_v3``: torchvision's names (``Conv2d_1a_3x3.conv.weight``,
  ``Mixed_6e.branch7x7dbl_5.bn.running_var``, ...) map onto the same flat names; as the
  reference WSOL evaluation does, ``Mixed_7*``, ``AuxLogits*`` and ``fc.*`` are dropped (the
  WSOL network stops at Mixed_6e). With ``include_head=True`` the reference's InceptionCam /
  InceptionAdl neck and class layer are imported too: ``SPG_A3_1b.0`` / ``SPG_A3_2b.0`` ->
  ``A3_1b`` / ``A3_2b``, the 1x1 convolution ``SPG_A4`` -> the Dense ``head``.

Files: ``.pth`` / ``.pt`` (read with torch, only if it is installed) or ``.npz`` with the same
keys. Converted variables are written as ``.npz`` (keys ``"params/conv1/kernel"``, ...) or
``.msgpack`` (flax serialisation) and read back with :func:`load_variables`. Nothing here
downloads anything.
"""
import os
from typing import Any, Dict, Mapping, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

from infocam_jax.models import resnet as resnet_lib
from infocam_jax.models import vgg as vgg_lib

ARCHS = {"vgg16": "vgg16_gap", "resnet50": "resnet50", "inception_v3": "inception_v3"}
VGG16_FEATURE_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)

# kind -> (collection, leaf name, array transform)
_KINDS = {
    "conv": ("params", "kernel", lambda w: np.transpose(w, (2, 3, 1, 0))),
    "dense": ("params", "kernel", lambda w: np.transpose(w, (1, 0))),
    # a 1x1 convolution stored Dense-shaped: [out, in, 1, 1] -> kernel [in, out]
    "conv1x1_dense": ("params", "kernel", lambda w: np.transpose(w[:, :, 0, 0], (1, 0))),
    "bias": ("params", "bias", lambda w: w),
    "bn_weight": ("params", "scale", lambda w: w),
    "bn_bias": ("params", "bias", lambda w: w),
    "bn_mean": ("batch_stats", "mean", lambda w: w),
    "bn_var": ("batch_stats", "var", lambda w: w),
}
_BN = (("weight", "bn_weight"), ("bias", "bn_bias"), ("running_mean", "bn_mean"),
       ("running_var", "bn_var"))


def key_map(arch: str, include_head: bool = False,
            method: str = "cam") -> Dict[str, Tuple[Tuple[str, ...], str]]:
    """torchvision key -> (our module path, kind) for every imported tensor.

    Args:
      arch: "vgg16", "resnet50" or "inception_v3".
      include_head: also map the WSOL head keys (VGG ``conv6.*``; ``fc.*``; InceptionV3: the
        reference's neck and method head, :func:`inception_key_map`) onto our names.
      method: the network method of the WSOL head keys (InceptionV3 only so far).
    """
    if arch == "inception_v3":
        return inception_key_map(include_head, method)
    mapping = {}
    if arch == "vgg16":
        names = [f"conv{b}_{l}" for b, layers in enumerate(vgg_lib.VGG16_BLOCKS, start=1)
                 for l in range(1, len(layers) + 1)]
        for idx, name in zip(VGG16_FEATURE_INDICES, names):
            mapping[f"features.{idx}.weight"] = ((name,), "conv")
            mapping[f"features.{idx}.bias"] = ((name,), "bias")
        if include_head:
            mapping["conv6.weight"] = (("conv6",), "conv")
            mapping["conv6.bias"] = (("conv6",), "bias")
    elif arch == "resnet50":
        def conv_bn(tconv, tbn, path_conv, path_bn):
            mapping[f"{tconv}.weight"] = (path_conv, "conv")
            for suffix, kind in _BN:
                mapping[f"{tbn}.{suffix}"] = (path_bn, kind)

        conv_bn("conv1", "bn1", ("conv1",), ("bn1",))
        for L, n in enumerate(resnet_lib.RESNET50_LAYERS, start=1):
            for i in range(n):
                t, f = f"layer{L}.{i}", f"layer{L}_{i}"
                for j in (1, 2, 3):
                    conv_bn(f"{t}.conv{j}", f"{t}.bn{j}", (f, f"conv{j}"), (f, f"bn{j}"))
                if i == 0:
                    conv_bn(f"{t}.downsample.0", f"{t}.downsample.1", (f, "downsample_conv"),
                            (f, "downsample_bn"))
    else:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCHS)}")
    if include_head:
        mapping["fc.weight"] = (("head",), "dense")
        mapping["fc.bias"] = (("head",), "bias")
    return mapping


# torchvision InceptionV3 keys the WSOL network has no counterpart for (the reference's
# remove_layer calls): Mixed_7a..7c, the auxiliary classifier and the fully connected layer.
INCEPTION_DROPPED_PREFIXES = ("Mixed_7", "AuxLogits", "fc.")


def inception_key_map(include_head: bool = False,
                      method: str = "cam") -> Dict[str, Tuple[Tuple[str, ...], str]]:
    """torchvision InceptionV3 key -> (our module path, kind): the stem and Mixed_5b..6e.

    Every ``BasicConv2d`` ``<unit>.conv.weight`` -> ``<unit>/conv`` kernel and
    ``<unit>.bn.{weight,bias,running_mean,running_var}`` -> ``<unit>/bn`` scale / bias /
    mean / var, where ``<unit>`` is ``Conv2d_1a_3x3`` or ``Mixed_5b.branch1x1`` etc. (our path
    ``("Mixed_5b", "branch1x1")``).

    ``include_head``: the reference's InceptionV3 ``method`` network's other layers (the 1x1
    class convolutions become Dense-shaped kernels):

    * cam / adl / spg: ``SPG_A3_1b.0``, ``SPG_A3_2b.0`` -> ``A3_1b``, ``A3_2b``;
      ``SPG_A4`` -> ``head`` (cam / adl) or ``spg/a4`` (spg);
    * spg: ``SPG_B_1a.0`` -> ``spg/b1a``, ``SPG_B_2a.0`` -> ``spg/b2a``, ``SPG_B_shared.0`` /
      ``.2`` -> ``spg/shared_conv`` / ``spg/shared_out``, ``SPG_C.0`` / ``.2`` ->
      ``spg/c_conv`` / ``spg/c_out``;
    * acol: ``classifier_{A,B}.0`` / ``.2`` / ``.4`` -> ``acol/{a,b}_conv1`` / ``_conv2`` /
      ``_head``.
    """
    from infocam_jax.models import inception as inception_lib  # pylint: disable=import-outside-toplevel
    from infocam_jax.models import spec as spec_lib  # pylint: disable=import-outside-toplevel
    net = spec_lib.network_method(method)
    mapping = {}

    def unit(key, path):
        mapping[f"{key}.conv.weight"] = (path + ("conv",), "conv")
        for suffix, kind in _BN:
            mapping[f"{key}.bn.{suffix}"] = (path + ("bn",), kind)

    def conv(key, path, kind="conv"):
        mapping[f"{key}.weight"] = (path, kind)
        mapping[f"{key}.bias"] = (path, "bias")

    for name in inception_lib.STEM_UNITS:
        unit(name, (name,))
    for name, kind, _ in inception_lib.MIXED_BLOCKS:
        for child in inception_lib.BLOCK_UNITS[kind]:
            unit(f"{name}.{child}", (name, child))
    if not include_head:
        return mapping
    if net == "acol":
        for branch in ("A", "B"):
            prefix = branch.lower()
            conv(f"classifier_{branch}.0", ("acol", f"{prefix}_conv1"))
            conv(f"classifier_{branch}.2", ("acol", f"{prefix}_conv2"))
            conv(f"classifier_{branch}.4", ("acol", f"{prefix}_head"), "conv1x1_dense")
        return mapping
    for name in inception_lib.NECK_CONVS:
        conv(f"SPG_{name}.0", (name,))
    conv("SPG_A4", ("spg", "a4") if net == "spg" else ("head",), "conv1x1_dense")
    if net == "spg":
        for key, name in (("SPG_B_1a.0", "b1a"), ("SPG_B_2a.0", "b2a"),
                          ("SPG_B_shared.0", "shared_conv"), ("SPG_B_shared.2", "shared_out"),
                          ("SPG_C.0", "c_conv"), ("SPG_C.2", "c_out")):
            conv(key, ("spg", name))
    return mapping


def _ignored(arch: str, key: str, include_head: bool) -> bool:
    if key.endswith("num_batches_tracked"):
        return True
    if arch == "inception_v3":
        return key.startswith(INCEPTION_DROPPED_PREFIXES)
    if arch == "vgg16" and key.startswith("classifier."):
        return True  # torchvision's fully connected classifier has no WSOL counterpart
    return not include_head and key.startswith("fc.")


def convert_state_dict(arch: str, state_dict: Mapping[str, Any], variables: Mapping[str, Any],
                       include_head: bool = False, method: str = "cam") -> Dict[str, Any]:
    """Copies a torchvision state dict into (a copy of) initialised Flax variables.

    Args:
      arch: "vgg16", "resnet50" or "inception_v3".
      state_dict: torchvision key -> array (NumPy or torch tensor), float.
      variables: variables of ``models.create(ARCHS[arch], num_classes)`` (from ``init``);
        the layers not imported (head, VGG conv6) keep these values.
      include_head: see :func:`key_map`.

    Returns:
      New variables (nested dicts of float32 NumPy arrays) with the imported weights.

    Raises:
      ValueError: listing missing keys, unexpected keys and shape mismatches.
    """
    mapping = key_map(arch, include_head, method)
    state = {k[len("module."):] if k.startswith("module.") else k: v
             for k, v in state_dict.items()}
    missing = sorted(k for k in mapping if k not in state)
    unexpected = sorted(k for k in state
                        if k not in mapping and not _ignored(arch, k, include_head))
    out = jax.tree_util.tree_map(lambda a: np.array(a, dtype=np.float32),
                                 flax.core.unfreeze(variables))
    mismatched = []
    for key, (path, kind) in mapping.items():
        if key not in state:
            continue
        collection, leaf, transform = _KINDS[kind]
        value = np.array(transform(np.asarray(_to_numpy(state[key]), dtype=np.float32)))  # copy
        node = out.get(collection, {})
        for p in path:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if leaf not in node:
            mismatched.append(f"{key}: no target {collection}/{'/'.join(path)}/{leaf}")
        elif node[leaf].shape != value.shape:
            mismatched.append(f"{key}: shape {value.shape} after transpose, "
                              f"expected {node[leaf].shape}")
        else:
            node[leaf] = value
    if missing or unexpected or mismatched:
        raise ValueError(
            f"state dict does not match {arch}: missing keys {missing}; "
            f"unexpected keys {unexpected}; shape mismatches {mismatched}")
    return out


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch.Tensor
        return value.detach().cpu().numpy()
    return np.asarray(value)


def load_state_dict(path: str) -> Dict[str, np.ndarray]:
    """Reads a state dict from ``.npz`` or (when torch is importable) ``.pth``/``.pt``.

    A ``.pth`` holding ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"state dict file not found: {path}")
    if path.endswith(".npz"):
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    if path.endswith((".pth", ".pt")):
        try:
            import torch  # pylint: disable=import-outside-toplevel
        except ImportError as e:
            raise ImportError(f"reading {path} needs torch; install it or convert the state "
                              "dict to .npz with the same keys") from e
        state = torch.load(path, map_location="cpu", weights_only=True)
        for wrapper in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                state = state[wrapper]
        return {k: _to_numpy(v) for k, v in state.items()}
    raise ValueError(f"unsupported state dict file {path!r}: expected .npz, .pth or .pt")


def convert_file(arch: str, path: str, num_classes: int, seed: int = 0,
                 include_head: bool = False) -> Dict[str, Any]:
    """Loads a torchvision state dict file and returns variables for ``num_classes`` classes.

    The layers the file does not provide (head; VGG conv6; InceptionV3 A3_1b / A3_2b) are
    initialised as the models do (conv kernels He-normal on fan-out, Dense kernel
    N(0, 0.01^2), zero biases; InceptionV3: every kernel Xavier-uniform, the reference's
    ``initialize_weights(..., 'xavier')``) from a NumPy generator seeded with ``seed``; this
    avoids compiling the whole model's init.
    """
    from infocam_jax import models  # pylint: disable=import-outside-toplevel
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCHS)}")
    state = load_state_dict(path)
    model = models.create(ARCHS[arch], num_classes)
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    rng = np.random.default_rng(seed)

    def fresh(path_, leaf):
        name = path_[-1].key
        if name == "kernel" and arch == "inception_v3":
            return _xavier_uniform(rng, leaf.shape)
        if name == "kernel" and len(leaf.shape) == 4:  # HWIO, fan-out = k * k * O
            std = np.sqrt(2.0 / (leaf.shape[0] * leaf.shape[1] * leaf.shape[3]))
            return (rng.standard_normal(leaf.shape) * std).astype(np.float32)
        if name == "kernel":
            return (rng.standard_normal(leaf.shape) * 0.01).astype(np.float32)
        value = 1.0 if name in ("scale", "var") else 0.0
        return np.full(leaf.shape, value, np.float32)

    variables = jax.tree_util.tree_map_with_path(fresh, abstract)
    return convert_state_dict(arch, state, variables, include_head)


def _xavier_uniform(rng: np.random.Generator, shape: Tuple[int, ...]) -> np.ndarray:
    """U(-a, a), a = sqrt(6 / (fan_in + fan_out)), for an HWIO conv or [in, out] Dense kernel."""
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    bound = np.sqrt(6.0 / (receptive * (shape[-2] + shape[-1])))
    return rng.uniform(-bound, bound, shape).astype(np.float32)


def save_variables(variables: Mapping[str, Any], path: str) -> None:
    """Writes variables as ``.npz`` (flat "collection/module/.../leaf" keys) or ``.msgpack``."""
    host = jax.tree_util.tree_map(np.asarray, flax.core.unfreeze(variables))
    if path.endswith(".npz"):
        flat = flax.traverse_util.flatten_dict(host, sep="/")
        np.savez(path, **flat)
    elif path.endswith(".msgpack"):
        with open(path, "wb") as f:
            f.write(flax.serialization.msgpack_serialize(host))
    else:
        raise ValueError(f"output path must end in .npz or .msgpack, got {path!r}")


def load_variables(path: str) -> Dict[str, Any]:
    """Reads variables written by :func:`save_variables` (nested dicts of NumPy arrays)."""
    if path.endswith(".npz"):
        with np.load(path) as f:
            return flax.traverse_util.unflatten_dict({k: f[k] for k in f.files}, sep="/")
    if path.endswith(".msgpack"):
        with open(path, "rb") as f:
            return flax.serialization.msgpack_restore(f.read())
    raise ValueError(f"variables path must end in .npz or .msgpack, got {path!r}")


def merge_pretrained(variables: Mapping[str, Any], pretrained: Mapping[str, Any],
                     skip: Tuple[str, ...] = ("head",)) -> Dict[str, Any]:
    """Overwrites initialised variables with pretrained ones (e.g. from :func:`load_variables`).

    Args:
      variables: freshly initialised model variables.
      pretrained: converted variables of the same architecture.
      skip: top-level module names kept from ``variables`` (default: the head, whose shape
        depends on the number of classes).

    Returns:
      New variables (same structure and dtypes as ``variables``).

    Raises:
      ValueError: listing pretrained leaves without a target, targets without a pretrained
        leaf, and shape mismatches.
    """
    flat_init = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
    flat_pre = flax.traverse_util.flatten_dict(flax.core.unfreeze(pretrained))
    keep = lambda k: len(k) > 1 and k[1] in skip  # k = (collection, module, ...)
    missing = sorted("/".join(k) for k in flat_init if not keep(k) and k not in flat_pre)
    unexpected = sorted("/".join(k) for k in flat_pre if not keep(k) and k not in flat_init)
    mismatched = sorted(f"{'/'.join(k)}: {np.shape(flat_pre[k])} vs {np.shape(v)}"
                        for k, v in flat_init.items()
                        if not keep(k) and k in flat_pre and np.shape(flat_pre[k]) != v.shape)
    if missing or unexpected or mismatched:
        raise ValueError(f"pretrained variables do not match the model: missing {missing}; "
                         f"unexpected {unexpected}; shape mismatches {mismatched}")
    merged = {k: (v if keep(k) else jnp.asarray(flat_pre[k], dtype=v.dtype))
              for k, v in flat_init.items()}
    return flax.traverse_util.unflatten_dict(merged)
