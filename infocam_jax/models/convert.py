"""Import torchvision-format state dicts (``vgg16``, ``resnet50``, ``inception_v3``) and
timm / DeiT state dicts (``deit_{tiny,small,base}[_distilled]_patch16_224``) into our Flax
variables.

A state dict is a mapping ``name -> array`` with torchvision's names and layouts
(``features.0.weight``, ``layer1.0.conv1.weight``, ``bn1.running_mean``, ...). Conversion:

* Conv weight OIHW -> kernel HWIO; Dense weight [out, in] -> kernel [in, out];
* BatchNorm weight/bias -> params scale/bias, running_mean/var -> batch_stats mean/var
  (``num_batches_tracked`` is ignored);
* the classifier is not imported: VGG's ``classifier.*`` and ResNet's ``fc.*`` are dropped and
  ``head`` (and VGG's new ``conv6``) keep their fresh initialisation for ``num_classes``.
  With ``include_head=True`` the WSOL-style keys ``conv6.*`` (VGG) and ``fc.*`` are imported
  too (needed to compare against a complete PyTorch WSOL network).
* ``layout=`` / ``head_layout=`` / ``large_feature_map=`` / ``adl_positions=`` name the
  reference WSOL evaluation's state-dict layout of that model (ADL modules and dropped pools
  shift VGG's ``features.<i>`` and ResNet's block indices; a method's layout renames trunk
  blocks; a method head's keys come from its ``head_layout``, ``Method.weight_layout``; pass
  ``**methods.get(name).convert_options()``); the default ("cam", False) is torchvision's
  layout, as before (:func:`key_map`).
* ``inception_v3``: torchvision's names (``Conv2d_1a_3x3.conv.weight``,
  ``Mixed_6e.branch7x7dbl_5.bn.running_var``, ...) map onto the same flat names for every
  method (the reference's InceptionV3 networks keep them); as the reference does,
  ``Mixed_7*``, ``AuxLogits*`` and ``fc.*`` are dropped (the WSOL network stops at Mixed_6e).
  With ``include_head=True`` the reference's neck and method head are imported too:
  ``SPG_A3_1b.0`` / ``SPG_A3_2b.0`` -> ``A3_1b`` / ``A3_2b``, the 1x1 convolution ``SPG_A4``
  -> the Dense ``head`` (layouts cam, adl) or the method head's class conv.
* DeiT (timm's and facebookresearch/deit's names: ``cls_token``, ``pos_embed``,
  ``patch_embed.proj.weight``, ``blocks.{i}.attn.qkv.weight``, ``norm.weight``, ``head.weight``,
  ...): the patch convolution OIHW -> our ``patch_embed`` Dense kernel [(y, x, c), D], Linear
  weights transposed, LayerNorm weight / bias -> scale / bias, tokens and position embeddings
  as they are. ``head.*`` (and ``head_dist.*``) only with ``include_head=True``; the number of
  blocks is read from the variables (``depth``), 12 in the released files. The released
  DeiT weights (dl.fbaipublicfiles.com / the Hugging Face hub) cannot be downloaded on this
  machine; the conversion is tested on a PyTorch twin with timm's names and synthetic weights.

Files: ``.pth`` / ``.pt`` (read with torch, only if it is installed) or ``.npz`` with the same
keys. Converted variables are written as ``.npz`` (keys ``"params/conv1/kernel"``, ...) or
``.msgpack`` (flax serialisation) and read back with :func:`load_variables`. Nothing here
downloads anything.
"""
import functools
import os
from typing import Any, Dict, Mapping, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from infocam_jax import models
from infocam_jax.models import deit as deit_lib
from infocam_jax.models import inception as inception_lib
from infocam_jax.models import resnet as resnet_lib
from infocam_jax.models import spec as spec_lib
from infocam_jax.models import vgg as vgg_lib

ARCHS = {"vgg16": "vgg16_gap", "resnet50": "resnet50", "inception_v3": "inception_v3",
         **{f"{name}_patch16_224": name for name in deit_lib.ARCHS}}
VGG16_FEATURE_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)

# kind -> (collection, leaf name, array transform)
_KINDS = {
    "conv": ("params", "kernel", lambda w: np.transpose(w, (2, 3, 1, 0))),
    "dense": ("params", "kernel", lambda w: np.transpose(w, (1, 0))),
    # a 1x1 class convolution [M, K, 1, 1] stored as our Dense kernel [K, M]
    "conv1x1_dense": ("params", "kernel", lambda w: np.transpose(w[:, :, 0, 0], (1, 0))),
    "bias": ("params", "bias", lambda w: w),
    "bn_weight": ("params", "scale", lambda w: w),
    "bn_bias": ("params", "bias", lambda w: w),
    "bn_mean": ("batch_stats", "mean", lambda w: w),
    "bn_var": ("batch_stats", "var", lambda w: w),
    # a patch convolution [D, C, p, p] as our Dense kernel on (y, x, c)-flattened patches
    "patch_dense": ("params", "kernel",
                    lambda w: np.transpose(w, (2, 3, 1, 0)).reshape(-1, w.shape[0])),
    "cls_token": ("params", "cls_token", lambda w: w),
    "dist_token": ("params", "dist_token", lambda w: w),
    "pos_embed": ("params", "pos_embed", lambda w: w),
}
_BN = (("weight", "bn_weight"), ("bias", "bn_bias"), ("running_mean", "bn_mean"),
       ("running_var", "bn_var"))


def _head_keys(head, conv, head_layout, class_key):
    if head_layout is None:
        raise ValueError("a method head's layout needs its head_layout "
                         "(``methods.get(name).convert_options()``)")
    head_layout(head, conv, class_key)


def _vgg16_layout(layout: str, large_feature_map: bool, adl_positions: Tuple[str, ...],
                  head_layout=None):
    """(trunk, head) key maps of the reference WSOL evaluation's VGG16 in ``layout``.

    The reference's ``features`` is a torch Sequential: every conv takes two indices (conv,
    ReLU), every pool and every ADL module one, so pools dropped by ``large_feature_map`` and
    ADL modules shift the indices of the convs after them. The "guidance" layout keeps conv4 /
    conv5 outside ``features`` as ``SPG_A_1`` / ``SPG_A_2``, and its neck as ``SPG_A_3``.
    """
    trunk, head = {}, {}

    def conv(table, key, path, kind="conv"):
        table[f"{key}.weight"] = (path, kind)
        table[f"{key}.bias"] = (path, "bias")

    idx = 0
    pools = vgg_lib._vgg_pools(layout, large_feature_map)  # pylint: disable=protected-access
    guided = layout == "guidance"
    for b, (layers, pool) in enumerate(zip(vgg_lib.VGG16_BLOCKS, pools), start=1):
        for l in range(1, len(layers) + 1):
            if guided and b >= 4:
                conv(trunk, f"SPG_A_{b - 3}.{2 * (l - 1)}", (f"conv{b}_{l}",))
                continue
            conv(trunk, f"features.{idx}", (f"conv{b}_{l}",))
            idx += 2 + (f"{b}{l}" in adl_positions)
        if pool is not None and not (guided and b >= 4):
            idx += 1 + (f"{b}M" in adl_positions)
    if layout in ("cam", "adl"):
        conv(head, "conv6", ("conv6",))
        head["fc.weight"] = (("head",), "dense")
        head["fc.bias"] = (("head",), "bias")
        return trunk, head
    if guided:
        for i in (1, 2):
            conv(head, f"SPG_A_3.{2 * (i - 1)}", (f"spg_a3_{i}",))
    _head_keys(head, conv, head_layout, "SPG_A_4")
    return trunk, head


def _resnet50_layout(layout: str, large_feature_map: bool,  # pylint: disable=unused-argument
                     adl_positions: Tuple[str, ...], head_layout=None):
    """(trunk, head) key maps of the reference's ResNet50 in ``layout``: torchvision's names,
    except that ADL modules shift the block indices after them inside their layer, and the
    "guidance" layout splits layer3 into ``SPG_A1`` (block 0) and ``SPG_A2`` (blocks 1-5)."""
    trunk, head = {}, {}

    def conv_bn(tconv, tbn, path_conv, path_bn):
        trunk[f"{tconv}.weight"] = (path_conv, "conv")
        for suffix, kind in _BN:
            trunk[f"{tbn}.{suffix}"] = (path_bn, kind)

    def conv(table, key, path, kind="conv"):
        table[f"{key}.weight"] = (path, kind)
        table[f"{key}.bias"] = (path, "bias")

    conv_bn("conv1", "bn1", ("conv1",), ("bn1",))
    for L, n in enumerate(resnet_lib.RESNET50_LAYERS, start=1):
        for i in range(n):
            if layout == "guidance" and L == 3:
                t = "SPG_A1.0" if i == 0 else f"SPG_A2.{i - 1}"
            else:
                shift = sum(1 for j in range(i) if f"{L}{j}" in adl_positions)
                t = f"layer{L}.{i + shift}"
            f = f"layer{L}_{i}"
            for j in (1, 2, 3):
                conv_bn(f"{t}.conv{j}", f"{t}.bn{j}", (f, f"conv{j}"), (f, f"bn{j}"))
            if i == 0:
                conv_bn(f"{t}.downsample.0", f"{t}.downsample.1", (f, "downsample_conv"),
                        (f, "downsample_bn"))
    if layout in ("cam", "adl"):
        head["fc.weight"] = (("head",), "dense")
        head["fc.bias"] = (("head",), "bias")
    else:
        _head_keys(head, conv, head_layout, "SPG_A4")
    return trunk, head


# torchvision InceptionV3 keys the WSOL network has no counterpart for (the reference's
# remove_layer calls): Mixed_7a..7c, the auxiliary classifier and the fully connected layer.
INCEPTION_DROPPED_PREFIXES = ("Mixed_7", "AuxLogits", "fc.")


def _inception_v3_layout(layout: str, large_feature_map: bool,  # pylint: disable=unused-argument
                         adl_positions: Tuple[str, ...],  # pylint: disable=unused-argument
                         head_layout=None):
    """(trunk, head) key maps of torchvision's / the reference's InceptionV3 in ``layout``.

    Trunk (the same for every method and ``large_feature_map``: the extra pool and the ADL
    modules hold no tensors): every ``BasicConv2d`` ``<unit>.conv.weight`` -> ``<unit>/conv``
    kernel and ``<unit>.bn.{weight,bias,running_mean,running_var}`` -> ``<unit>/bn`` scale /
    bias / mean / var, ``<unit>`` = ``Conv2d_1a_3x3`` ... or ``Mixed_5b.branch1x1`` ... (our
    path ``("Mixed_5b", "branch1x1")``). Head: every layout but "erasing" has the neck
    ``SPG_A3_1b.0``, ``SPG_A3_2b.0`` -> ``A3_1b``, ``A3_2b``; then ``SPG_A4`` -> ``head``
    (cam / adl), or the method's ``head_layout`` with class key ``SPG_A4``.
    """
    trunk, head = {}, {}

    def unit(key, path):
        trunk[f"{key}.conv.weight"] = (path + ("conv",), "conv")
        for suffix, kind in _BN:
            trunk[f"{key}.bn.{suffix}"] = (path + ("bn",), kind)

    def conv(table, key, path, kind="conv"):
        table[f"{key}.weight"] = (path, kind)
        table[f"{key}.bias"] = (path, "bias")

    for name in inception_lib.STEM_UNITS:
        unit(name, (name,))
    for name, kind, _ in inception_lib.MIXED_BLOCKS:
        for child in inception_lib.BLOCK_UNITS[kind]:
            unit(f"{name}.{child}", (name, child))
    if layout != "erasing":
        for name in inception_lib.NECK_CONVS:
            conv(head, f"SPG_{name}.0", (name,))
    if layout in ("cam", "adl"):
        conv(head, "SPG_A4", ("head",), "conv1x1_dense")
    else:
        _head_keys(head, conv, head_layout, "SPG_A4")
    return trunk, head


def _deit_layout(layout: str, large_feature_map: bool,  # pylint: disable=unused-argument
                 adl_positions: Tuple[str, ...],  # pylint: disable=unused-argument
                 head_layout=None,  # pylint: disable=unused-argument
                 *, distilled: bool, depth: int = 12):
    """(trunk, head) key maps of timm's DeiT with ``depth`` blocks (layout "cam" only)."""
    if layout != "cam":
        raise ValueError(f"layout {layout!r} is not defined for DeiT state dicts (only 'cam')")
    trunk, head = {}, {}

    def dense(table, key, path):
        table[f"{key}.weight"] = (path, "dense")
        table[f"{key}.bias"] = (path, "bias")

    def norm(key, path):
        trunk[f"{key}.weight"] = (path, "bn_weight")
        trunk[f"{key}.bias"] = (path, "bn_bias")

    for token in ("cls_token", "pos_embed") + (("dist_token",) if distilled else ()):
        trunk[token] = (("tokens",), token)
    trunk["patch_embed.proj.weight"] = (("patch_embed",), "patch_dense")
    trunk["patch_embed.proj.bias"] = (("patch_embed",), "bias")
    for i in range(depth):
        b = f"blocks_{i}"
        norm(f"blocks.{i}.norm1", (b, "norm1"))
        norm(f"blocks.{i}.norm2", (b, "norm2"))
        dense(trunk, f"blocks.{i}.attn.qkv", (b, "attn", "qkv"))
        dense(trunk, f"blocks.{i}.attn.proj", (b, "attn", "proj"))
        dense(trunk, f"blocks.{i}.mlp.fc1", (b, "fc1"))
        dense(trunk, f"blocks.{i}.mlp.fc2", (b, "fc2"))
    norm("norm", ("norm",))
    dense(head, "head", ("head",))
    if distilled:
        dense(head, "head_dist", ("head_dist",))
    return trunk, head


# arch -> layout(layout, large_feature_map, adl_positions, head_layout) -> (trunk key map,
# head key map). A backbone adds its layout here.
LAYOUTS = {"vgg16": _vgg16_layout, "resnet50": _resnet50_layout,
           "inception_v3": _inception_v3_layout,
           **{arch: functools.partial(_deit_layout, distilled=deit_lib.ARCHS[name].distilled)
              for arch, name in ARCHS.items() if name in deit_lib.ARCHS}}


def _block_count(variables: Mapping[str, Any]) -> int:
    """The number of ``blocks_{i}`` of a DeiT's variables."""
    return sum(1 for k in variables.get("params", {}) if k.startswith("blocks_"))


def _layout(arch: str, layout: str, large_feature_map: bool, adl_positions, head_layout=None,
            depth=None):
    if arch not in LAYOUTS:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(LAYOUTS)}")
    if layout not in spec_lib.LAYOUTS:
        raise ValueError(f"layout must be one of {spec_lib.LAYOUTS} (the reference's state-dict "
                         f"layouts), got {layout!r}")
    if not isinstance(large_feature_map, bool):
        raise ValueError(f"large_feature_map must be a bool, got {large_feature_map!r}")
    if adl_positions is None:
        adl_positions = (spec_lib.get(ARCHS[arch]).adl_default if layout == "adl" else "")
    elif layout != "adl":
        raise ValueError(f"adl_positions is only used with layout 'adl', got "
                         f"{adl_positions!r} with layout {layout!r}")
    if not isinstance(adl_positions, str):
        raise ValueError(f"adl_positions must be a space-separated string, got "
                         f"{adl_positions!r}")
    extra = {} if depth is None else {"depth": depth}
    return LAYOUTS[arch](layout, large_feature_map, tuple(adl_positions.split()), head_layout,
                         **extra)


def key_map(arch: str, include_head: bool = False, layout: str = "cam",
            large_feature_map: bool = False, adl_positions: Any = None, head_layout=None,
            depth=None) -> Dict[str, Tuple[Tuple[str, ...], str]]:
    """State-dict key -> (our module path, kind) for every imported tensor.

    The state dict's layout is the reference WSOL evaluation's model of ``(layout,
    head_layout, large_feature_map)``. The default (``"cam"``, False) is torchvision's layout (the
    reference's 14x14 VggCam / ResNetCam use torchvision's names plus ``conv6`` / ``fc``):
    use it for torchvision's pretrained weights whatever model they go into.

    Args:
      arch: "vgg16", "resnet50", "inception_v3" or "deit_small_patch16_224", ... (a key of
        :data:`LAYOUTS`).
      include_head: also map the new layers: VGG ``conv6.*`` and ``fc.*`` onto ``conv6`` /
        ``head`` (layouts cam, adl); a method head's keys from its ``head_layout`` (given the
        backbone's class-conv key: VGG ``SPG_A_4``, ResNet / InceptionV3 ``SPG_A4``); VGG's
        "guidance" neck ``SPG_A_3.{0,2}`` onto ``spg_a3_{1,2}``. 1x1 class convolutions
        become Dense-shaped kernels [K, M]. InceptionV3: ``SPG_A3_1b.0`` / ``SPG_A3_2b.0``
        onto ``A3_1b`` / ``A3_2b`` (every layout but "erasing") and ``SPG_A4`` onto ``head``
        (cam, adl).
      layout: a ``spec.LAYOUTS`` name ("cam" default; a method's ``Method.layout``). The
        backbone's names differ by layout: VGG-ADL's ADL modules and a dropped pool4
        (``large_feature_map`` for cam / adl) shift ``features.<i>``; VGG "guidance" holds
        conv4 / conv5 as ``SPG_A_1.{0,2,4}`` / ``SPG_A_2.{0,2,4}``; ResNet-ADL's modules
        shift the block indices (``layer3.i`` -> ``layer3.{i+1}`` after "30"); ResNet
        "guidance" holds layer3 as ``SPG_A1.0`` + ``SPG_A2.{0..4}``.
      head_layout: ``(table, conv, class_key) -> None``, a method's ``weight_layout`` (needed
        by the layouts with a method head).
      large_feature_map: the reference's option the state dict was built with.
      adl_positions: ADL position codes of an ``"adl"`` layout (default: the reference's,
        vgg16 "3M 43 53", resnet50 "30 40 42"); only with layout "adl".
      depth: DeiT only, its number of blocks (None: 12, the released models').

    Raises:
      ValueError: unknown arch or layout, or a bad option (naming it).
    """
    trunk, head = _layout(arch, layout, large_feature_map, adl_positions, head_layout, depth)
    return {**trunk, **head} if include_head else trunk


def _ignored(arch: str, key: str, head_keys) -> bool:
    if key.endswith("num_batches_tracked"):
        return True
    if arch == "vgg16" and key.startswith("classifier."):
        return True  # torchvision's fully connected classifier has no WSOL counterpart
    if arch == "inception_v3" and key.startswith(INCEPTION_DROPPED_PREFIXES):
        return True
    return key in head_keys or key.startswith("fc.")


def convert_state_dict(arch: str, state_dict: Mapping[str, Any], variables: Mapping[str, Any],
                       include_head: bool = False, layout: str = "cam",
                       large_feature_map: bool = False,
                       adl_positions: Any = None, head_layout=None) -> Dict[str, Any]:
    """Copies a torchvision (or reference WSOL evaluation) state dict into (a copy of)
    initialised Flax variables.

    Args:
      arch: a key of :data:`ARCHS` ("vgg16", "resnet50", "inception_v3",
        "deit_small_patch16_224", ...).
      state_dict: key -> array (NumPy or torch tensor), float.
      variables: variables of ``methods.create_model(ARCHS[arch], num_classes, method=...)``
        (from ``init`` or zeros of its shapes); the layers not imported (the new layers
        without ``include_head``) keep these values.
      include_head, layout, large_feature_map, adl_positions, head_layout: the state dict's
        layout, see
        :func:`key_map` (defaults: torchvision's layout, today's behaviour).

    Returns:
      New variables (nested dicts of float32 NumPy arrays) with the imported weights.

    Raises:
      ValueError: listing missing keys, unexpected keys and shape mismatches.
    """
    depth = _block_count(variables) if ARCHS.get(arch) in deit_lib.ARCHS else None
    trunk, head = _layout(arch, layout, large_feature_map, adl_positions, head_layout, depth)
    mapping = {**trunk, **head} if include_head else trunk
    head_keys = () if include_head else head
    state = {k[len("module."):] if k.startswith("module.") else k: v
             for k, v in state_dict.items()}
    missing = sorted(k for k in mapping if k not in state)
    unexpected = sorted(k for k in state
                        if k not in mapping and not _ignored(arch, k, head_keys))
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
            f"state dict does not match {arch} ({layout} layout): missing keys {missing}; "
            f"unexpected keys {unexpected}; shape mismatches {mismatched}")
    kept = sorted(k for k in head_keys if k in state)
    if kept:
        logging.warning("convert_state_dict(%r): the state dict's head keys %s were not imported "
                        "(include_head=False): the template's head is kept", arch, kept)
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
                 include_head: bool = False, large_feature_map: bool = False
                 ) -> Dict[str, Any]:
    """Loads a torchvision state dict file and returns variables for ``num_classes`` classes
    of ``models.create(ARCHS[arch], num_classes, large_feature_map)`` (the GAP network); the
    file's layout is torchvision's (default) or the reference's for ``large_feature_map``
    (:func:`key_map`). A method head's variables: :func:`convert_state_dict` with the
    method's ``convert_options()``.

    The layers the file does not provide (head; VGG conv6; InceptionV3 A3_1b / A3_2b) are
    initialised as the models do (conv kernels He-normal on fan-out, Dense kernel
    N(0, 0.01^2), zero biases; InceptionV3: every kernel Xavier-uniform, the reference's
    ``initialize_weights(..., 'xavier')``) from a NumPy generator seeded with ``seed``; this
    avoids compiling the whole model's init.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCHS)}")
    state = load_state_dict(path)
    model = models.create(ARCHS[arch], num_classes, large_feature_map)
    return convert_state_dict(arch, state, fresh_variables(arch, model, seed), include_head,
                              large_feature_map=large_feature_map)


def fresh_variables(arch: str, model, seed: int = 0) -> Dict[str, Any]:
    """Initialised variables of ``model`` (a ``models.create(ARCHS[arch], ...)`` network) from a
    NumPy generator seeded with ``seed``, as the models initialise (conv kernels He-normal on
    fan-out, Dense kernel N(0, 0.01^2), zero biases, unit BatchNorm scale / variance;
    InceptionV3: every kernel Xavier-uniform, the reference's ``initialize_weights(...,
    'xavier')``), without compiling the model's init (``jax.eval_shape`` gives the shapes)."""
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

    return jax.tree_util.tree_map_with_path(fresh, abstract)


def _head_classes(head: Mapping[str, Any], state: Mapping[str, Any]):
    """The number of classes of the state dict's classifier (the rows of its class layer)."""
    for key, (_, kind) in head.items():
        if kind in ("dense", "conv1x1_dense") and key in state:
            return int(np.shape(state[key])[0])
    return None


def from_torch(arch: str, state_dict: Mapping[str, Any], num_classes: int | None = None, *,
               drop_head: bool = False, seed: int = 0, large_feature_map: bool = False):
    """``(model, variables)`` from an in-memory torchvision-layout state dict, in one call.

    ``model = models.create(ARCHS[arch], M, large_feature_map)`` (the WSOL GAP network: VGG16
    without pool5 plus ``conv6``; ResNet50 with layer4 at stride 1; InceptionV3 up to
    Mixed_6e), variables built here (:func:`fresh_variables`) and filled by
    :func:`convert_state_dict`.

    The classifier: when the state dict holds our head's keys (ResNet's ``fc.*``; VGG's
    ``conv6.*`` and ``fc.*``, as a WSOL checkpoint or the PyTorch twin) they are imported and
    ``M`` is read from them. Dropping them is explicit: ``drop_head=True`` (logged with absl
    logging at WARNING) initialises a fresh head for ``num_classes``; so is dropping keys that
    have no counterpart here (torchvision VGG16's fully connected ``classifier.*``).

    Args:
      arch: ``"vgg16"``, ``"resnet50"`` or ``"inception_v3"`` (torchvision's names).
      state_dict: key -> array (torch tensors or NumPy), e.g. ``torch_model.state_dict()``;
        a ``module.`` prefix (DataParallel) is removed.
      num_classes: ``M``; None reads it from the imported head.
      drop_head: initialise the head afresh (needs ``num_classes``) instead of importing it.
      seed: seed of the fresh layers; large_feature_map: see :func:`key_map`.

    Returns:
      ``(model, variables)`` with ``model.apply(variables, images, train=False) -> (logits
      [B, M], features [B, h, w, K])`` on NHWC float32 images.

    Raises:
      ValueError: unknown ``arch``; ``num_classes`` missing or different from the state dict's
        head without ``drop_head``; classifier keys without a counterpart and no ``drop_head``;
        keys that do not match (listed).
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {tuple(ARCHS)} (torchvision's / timm's names), "
                         f"got {arch!r}")
    state = {k[len("module."):] if k.startswith("module.") else k: v
             for k, v in state_dict.items()}
    _, head = _layout(arch, "cam", large_feature_map, None)
    has_head = all(k in state for k in head)
    stray = sorted(k for k in state if k in head or k.startswith("fc.")
                   or (arch == "vgg16" and k.startswith("classifier.")))
    import_head = has_head and not drop_head
    if import_head:
        head_m = _head_classes(head, state)
        if num_classes is not None and num_classes != head_m:
            raise ValueError(f"num_classes={num_classes}, but the state dict's head has "
                             f"{head_m} classes; pass drop_head=True for a fresh head")
        num_classes = head_m
    else:
        if num_classes is None:
            raise ValueError("num_classes is required when the head is not imported "
                             f"(drop_head={drop_head}, head keys present: {has_head})")
        if stray and not drop_head:
            raise ValueError(f"the state dict holds classifier keys with no counterpart here "
                             f"({', '.join(stray[:6])}{', ...' if len(stray) > 6 else ''}); "
                             "pass drop_head=True to drop them and train a fresh head")
        log = logging.warning if stray else logging.info
        log("from_torch(%r): classifier not imported (dropped keys: %s); a fresh head for %d "
            "classes (seed %d)", arch, ", ".join(stray) or "none", num_classes, seed)
    model = models.create(ARCHS[arch], num_classes, large_feature_map)
    variables = convert_state_dict(arch, state, fresh_variables(arch, model, seed),
                                   include_head=import_head, large_feature_map=large_feature_map)
    return model, jax.tree_util.tree_map(jnp.asarray, variables)


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
