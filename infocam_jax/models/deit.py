"""DeiT (Touvron et al., ICML 2021, "Training data-efficient image transformers"): a ViT
encoder with a class token (and, in the distilled variants, a distillation token).

224x224 input, patch 16 -> 14x14 patch tokens; ``[cls (, dist), patches] + pos_embed`` ->
``depth`` pre-norm blocks ``x + Attn(LN(x))``, ``x + MLP(LN(x))`` (MLP: Dense 4D, exact GELU,
Dense D) -> final LayerNorm ``norm`` (eps 1e-6, as timm).

=================  ====  =====  =====  =======================================
name               D     depth  heads  parameters (cls head, 1,000 classes)
=================  ====  =====  =====  =======================================
deit_tiny          192   12     3      5,717,416 (published 5.7 M)
deit_small         384   12     6      22,050,664 (published 22.1 M)
deit_base          768   12     12     86,567,656 (published 86.6 M)
deit_*_distilled   + ``dist_token``, one more position, ``head_dist``
=================  ====  =====  =====  =======================================

Options of ``models.create`` (``deit_*`` only):

* ``head``: ``"tokens_gap"`` (default) -- the patch tokens after ``norm``, reshaped to the grid
  ``features [B, h, w, D]``, averaged, one Dense ``head`` (``logits = mean(features) @ kernel +
  bias``, so CAM / infoCAM / infoCAM+ apply unchanged, as TS-CAM's token head); ``"cls"`` -- as
  published: the class token after ``norm`` -> Dense ``head`` (distilled: the mean of
  ``head(cls)`` and ``head_dist(dist)``, timm's inference output). ``features`` is the same
  grid for both heads, but only the token-GAP head's logits are its GAP.
* ``patch_size`` (16), ``embed_dim``, ``depth``, ``num_heads``, ``mlp_ratio`` (4.0): override the
  variant's sizes (a CPU-scale transformer is the same module, e.g. ``deit_tiny`` with
  ``patch_size=8, depth=2, img_size=32``);
* ``img_size`` (224): the input size the position embeddings are for (their grid is
  ``img_size / patch_size`` squared). Another input size resamples the patch part of
  ``pos_embed`` bicubically (Keys a = -0.75, half-pixel centres, replicated border, no
  antialiasing: torch's ``F.interpolate(mode="bicubic", align_corners=False)`` that timm's
  ``resample_abs_pos_embed`` calls), class / distillation positions unchanged. The input's H
  and W must be multiples of ``patch_size``.

Parameter names (``convert.py`` maps timm's ``deit_*_patch16_224`` keys onto them):
``patch_embed`` (the 16x16 / stride 16 convolution as a Dense on flattened (y, x, c) patches),
``tokens`` (``cls_token``, ``dist_token``, ``pos_embed``), ``blocks_{i}`` (``norm1``, ``attn``
(``qkv``, ``proj``), ``norm2``, ``mlp`` (``fc1``, ``fc2``)), ``norm``, ``head``, ``head_dist``.

Post-hoc layer paths: ``"patch_embed"`` ([B, h, w, D]) and ``"blocks_{i}"``, whose tokens
``[B, N, D]`` the post-hoc core reshapes to the patch grid (each :class:`Block` carries its
``token_grid`` and ``num_prefix_tokens``). Each block's attention probabilities
``[B, heads, N, N]`` are sown as ``intermediates/blocks_{i}/attn/attention`` (read with
``mutable=["intermediates"]``; the attention maps of ``maps.posthoc.attention``).

Compute dtype ``dtype`` (float32 or bfloat16) for the Dense layers; LayerNorm statistics and
the softmax run in float32; parameters float32.

The methods: CAM, HaS and CutMix (layout "cam") train a DeiT unchanged; ADL, ACoL and SPG need
CNN positions that a DeiT does not define ("adl", "erasing", "guidance" layouts): refused by
``methods.create_model`` naming the method and the backbone.
"""
import dataclasses
import functools
from typing import Any, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from infocam_jax import boxes
from infocam_jax.models import spec as spec_lib

HEADS = ("tokens_gap", "cls")
LN_EPS = 1e-6
_DENSE_INIT = nn.initializers.truncated_normal(0.02)


@dataclasses.dataclass(frozen=True)
class DeitArch:
    """Sizes of a DeiT (module docstring); options of ``models.create`` override them."""
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int = 16
    img_size: int = 224
    mlp_ratio: float = 4.0
    distilled: bool = False
    head: str = "tokens_gap"

    @property
    def num_prefix_tokens(self) -> int:
        return 2 if self.distilled else 1


_SIZES = {"deit_tiny": (192, 12, 3), "deit_small": (384, 12, 6), "deit_base": (768, 12, 12)}
ARCHS: Dict[str, DeitArch] = {}
for _name, _size in _SIZES.items():
    ARCHS[_name] = DeitArch(*_size)
    ARCHS[_name + "_distilled"] = DeitArch(*_size, distilled=True)
OPTIONS = ("head", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "img_size")


def check_options(options: Dict[str, Any], name: str) -> None:
    """ValueError naming the option of a bad DeiT option value (``models.create``)."""
    head = options.get("head", "tokens_gap")
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    for key in ("patch_size", "embed_dim", "depth", "num_heads", "img_size"):
        value = options.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive int, got {value!r}")
    ratio = options.get("mlp_ratio", 4.0)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio <= 0:
        raise ValueError(f"mlp_ratio must be a positive number, got {ratio!r}")
    arch = dataclasses.replace(ARCHS[name], **options)
    if arch.embed_dim % arch.num_heads:
        raise ValueError(f"embed_dim ({arch.embed_dim}) must be a multiple of num_heads "
                         f"({arch.num_heads})")
    if arch.img_size % arch.patch_size:
        raise ValueError(f"img_size ({arch.img_size}) must be a multiple of patch_size "
                         f"({arch.patch_size})")


def arch_of(name: str, opts: spec_lib.TrunkOptions) -> DeitArch:
    """The sizes of backbone ``name`` with the options in ``opts.backbone_options``."""
    return dataclasses.replace(ARCHS[name], **dict(opts.backbone_options))


class Attention(nn.Module):
    """Multi-head self-attention (timm ``Attention``: one ``qkv`` Dense, ``proj``).

    [B, N, D] -> [B, N, D]; sows the probabilities ``attention`` [B, heads, N, N] float32.
    """
    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, n, d = x.shape
        head_dim = d // self.num_heads
        qkv = nn.Dense(3 * d, dtype=self.dtype, kernel_init=_DENSE_INIT, name="qkv")(x)
        q, k, v = jnp.moveaxis(qkv.reshape(b, n, 3, self.num_heads, head_dim), 2, 0)
        scores = jnp.einsum("bqhc,bkhc->bhqk", q * head_dim ** -0.5, k)
        probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1)
        self.sow("intermediates", "attention", probs)
        out = jnp.einsum("bhqk,bkhc->bqhc", probs.astype(self.dtype), v).reshape(b, n, d)
        return nn.Dense(d, dtype=self.dtype, kernel_init=_DENSE_INIT, name="proj")(out)


class Block(nn.Module):
    """Pre-norm transformer block: [B, N, D] tokens -> [B, N, D].

    ``token_grid`` (h, w) and ``num_prefix_tokens`` say how its tokens map onto the patch grid
    (the post-hoc core's reshape: tokens ``[:, num_prefix_tokens:]`` -> [B, h, w, D]).
    """
    num_heads: int
    mlp_ratio: float
    token_grid: Tuple[int, int]
    num_prefix_tokens: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        norm = functools.partial(nn.LayerNorm, epsilon=LN_EPS, dtype=self.dtype)
        x = x + Attention(self.num_heads, self.dtype, name="attn")(norm(name="norm1")(x))
        y = norm(name="norm2")(x)
        y = nn.Dense(int(d * self.mlp_ratio), dtype=self.dtype, kernel_init=_DENSE_INIT,
                     name="fc1")(y)
        y = nn.Dense(d, dtype=self.dtype, kernel_init=_DENSE_INIT,
                     name="fc2")(nn.gelu(y, approximate=False))
        return x + y


class Tokens(nn.Module):
    """Prepends the class (and distillation) token and adds the position embeddings.

    [B, h, w, D] patch embeddings -> [B, prefix + h w, D]; ``pos_embed`` [1, prefix + G^2, D]
    (G = img_size / patch_size) resampled to (h, w) when they differ (module docstring).
    """
    grid: int
    num_prefix_tokens: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, patches):
        b, h, w, d = patches.shape
        init = nn.initializers.truncated_normal(0.02)
        prefix = [self.param("cls_token", init, (1, 1, d))]
        if self.num_prefix_tokens == 2:
            prefix.append(self.param("dist_token", init, (1, 1, d)))
        pos = self.param("pos_embed", init, (1, self.num_prefix_tokens + self.grid ** 2, d))
        pos_prefix, pos_grid = pos[:, :self.num_prefix_tokens], pos[0, self.num_prefix_tokens:]
        if (h, w) != (self.grid, self.grid):
            grid = pos_grid.T.reshape(d, self.grid, self.grid)
            pos_grid = boxes.upsample(grid, (h, w), "bicubic").reshape(d, h * w).T
        tokens = jnp.concatenate(
            [jnp.broadcast_to(t, (b, 1, d)) for t in prefix]
            + [patches.reshape(b, h * w, d)], axis=1)
        pos = jnp.concatenate([pos_prefix, pos_grid[None]], axis=1)
        return (tokens + pos).astype(self.dtype)


def _patches(images, patch_size: int):
    """[B, H, W, C] -> [B, H/p, W/p, p p C] flattened in (y, x, c) order (a conv's HWI)."""
    b, height, width, c = images.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"images must have H and W divisible by patch_size={patch_size}, "
                         f"got shape {images.shape}")
    h, w = height // patch_size, width // patch_size
    x = images.reshape(b, h, patch_size, w, patch_size, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, patch_size * patch_size * c)


def deit_trunk(images: jax.Array, train: bool,  # pylint: disable=unused-argument
               opts: spec_lib.TrunkOptions, name: str):
    """Patch embedding, tokens, blocks and ``norm``, built in the CALLING module's scope.

    Returns:
      (features [B, h, w, D]: the patch tokens after ``norm`` on the grid, in the compute
      dtype, {"prefix": [B, prefix, D] the class (and distillation) tokens after ``norm``}).
    """
    arch = arch_of(name, opts)
    x = nn.Dense(arch.embed_dim, dtype=opts.dtype, name="patch_embed")(
        _patches(images, arch.patch_size))
    b, h, w, d = x.shape
    prefix = arch.num_prefix_tokens
    x = Tokens(arch.img_size // arch.patch_size, prefix, opts.dtype, name="tokens")(x)
    for i in range(arch.depth):
        x = Block(arch.num_heads, arch.mlp_ratio, (h, w), prefix, opts.dtype,
                  name=f"blocks_{i}")(x)
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=opts.dtype, name="norm")(x)
    return x[:, prefix:].reshape(b, h, w, d), {"prefix": x[:, :prefix]}


def deit_head(features, taps, num_classes: int, opts: spec_lib.TrunkOptions, name: str):
    """The logits [B, M] float32 of the chosen head (module docstring), in the caller's scope."""
    arch = arch_of(name, opts)
    dense = functools.partial(nn.Dense, num_classes, kernel_init=spec_lib.DEFAULT_HEAD_INIT)
    if arch.head == "tokens_gap":
        return dense(name="head")(jnp.mean(features, (1, 2)))
    prefix = taps["prefix"].astype(jnp.float32)
    logits = dense(name="head")(prefix[:, 0])
    if arch.distilled:
        logits = (logits + dense(name="head_dist")(prefix[:, 1])) / 2
    return logits


def _identity_neck(x, train, opts):  # pylint: disable=unused-argument
    return x


def _deit_is_new(top: str, layout: str) -> bool:  # pylint: disable=unused-argument
    return top in ("head", "head_dist")


for _name in ARCHS:
    spec_lib.register(spec_lib.BackboneSpec(
        name=_name, layouts=("cam",), trunk=functools.partial(deit_trunk, name=_name),
        neck=_identity_neck, adl_codes=lambda large: (), is_new_layer=_deit_is_new,
        large_feature_map_ok=False, options=OPTIONS,
        head=functools.partial(deit_head, name=_name),
        gap_logits=lambda opts, _n=_name: arch_of(_n, opts).head == "tokens_gap",
        check_options=functools.partial(check_options, name=_name)))
