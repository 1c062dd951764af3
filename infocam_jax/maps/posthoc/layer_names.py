"""Layer names as PyTorch users write them, mapped to our module paths.

pytorch-grad-cam takes module objects (``model.layer4[-1]``); torch's ``named_modules`` spells
them with dots (``layer4.2``, ``layer4.2.bn3``, ``features.28``). Our layers are ``/``-joined Flax
module paths (``layer4_2``, ``layer4_2/bn3``, ``conv5_3``; :func:`.core.layer_paths`). A name
with a ``.`` or ``[`` is read as a torch spelling:

* a leading ``model.`` is dropped;
* ``layerL.i`` / ``layerL[i]`` -> ``layerL_i`` (ResNet stages; a negative ``i`` counts from the
  end of the stage, as Python indexing: ``layer3[-1]`` is ``layer3_5`` on ResNet50);
* ``features.n`` / ``features[n]`` -> the convolution at index ``n`` of torchvision's VGG
  ``features`` (each convolution and its ReLU take two indices, each pooling one:
  ``features.28`` -> ``conv5_3``); the ReLU and pooling indices have no module of their own
  here (our convolution modules output before the ReLU);
* any other dotted part joins with ``/`` (``layer4.2.bn3`` -> ``layer4_2/bn3``).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence

_INDEX = re.compile(r"\[(-?\d+)\]")
_STAGE = re.compile(r"layer\d+")
_VGG_CONV = re.compile(r"conv(\d+)_(\d+)")


def is_torch_spelling(layer: str) -> bool:
    """True when ``layer`` has a ``.`` or ``[`` (our paths have neither)."""
    return "." in layer or "[" in layer


def vgg_feature_indices(paths: Sequence[str]) -> dict[int, str]:
    """``{torchvision features index: our conv path}`` from the ``conv{b}_{l}`` paths in call
    order (empty for a model without them)."""
    out, index, block = {}, 0, None
    for path in paths:
        match = _VGG_CONV.fullmatch(path)
        if not match:
            continue
        if block is not None and match.group(1) != block:
            index += 1  # the pooling layer between blocks
        out[index] = path
        block = match.group(1)
        index += 2  # the convolution and its ReLU
    return out


def translate(layer: str, paths: Sequence[str]) -> str:
    """The torch spelling ``layer`` in our path syntax (not checked against ``paths``, which
    only resolve negative indices and VGG's feature numbering)."""
    parts = _INDEX.sub(r".\1", layer).split(".")
    if parts[0] == "model" and len(parts) > 1:
        parts = parts[1:]
    out = []
    i = 0
    while i < len(parts):
        part, nxt = parts[i], parts[i + 1] if i + 1 < len(parts) else None
        is_int = nxt is not None and re.fullmatch(r"-?\d+", nxt)
        if is_int and _STAGE.fullmatch(part):
            prefix = "/".join(out + [part]) + "_"
            blocks = sorted(int(p[len(prefix):]) for p in paths
                            if p.startswith(prefix) and p[len(prefix):].isdigit())
            index = int(nxt)
            if index < 0 and -index <= len(blocks):
                index = blocks[index]
            out.append(f"{part}_{index}")
            i += 2
        elif is_int and part == "features" and not out:
            out.append(vgg_feature_indices(paths).get(int(nxt), f"features/{nxt}"))
            i += 2
        else:
            out.append(part)
            i += 1
    return "/".join(out)


def resolve(layer: str, paths: Callable[[], Sequence[str]]) -> str:
    """``layer`` as our module path: unchanged unless it is a torch spelling, which is
    translated and checked against ``paths()`` (called only then: an abstract trace).

    Raises:
      ValueError: a torch spelling whose translation is not a layer of the model, naming
        ``layer``, the translation and the valid paths.
    """
    if not is_torch_spelling(layer):
        return layer
    valid = tuple(paths())
    ours = translate(layer, valid)
    if ours not in valid:
        raise ValueError(f"layer {layer!r} (a torch spelling, read as our path {ours!r}) is not "
                         f"a module path of this model; valid layers: {', '.join(valid)}")
    return ours
