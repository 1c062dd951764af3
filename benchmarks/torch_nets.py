"""PyTorch reference networks for the benchmarks (torchvision / timm layout, neither needed).

``build(arch, num_classes)`` returns an ``nn.Module`` whose ``forward(x)`` (NCHW float) gives
``(logits [B, M], features [B, K, h, w])``, the same networks as ``infocam_jax.models``:
ResNet50 with layer4 stride 1 (14x14x2048 at 224), VGG16-GAP (VGG16 D without pool5, conv6
3x3 512->1024, GAP, Linear) and DeiT-Ti / S / B with the token-GAP head (timm's
``VisionTransformer`` blocks and parameter names, attention through
``F.scaled_dot_product_attention`` as timm's fused path; features ``[B, D, 14, 14]`` at 224).
Imported lazily by the benchmark scripts, only when torch is.
"""
import torch
from torch import nn

ARCHS = ("resnet50", "vgg16_gap", "deit_tiny", "deit_small", "deit_base")
# DeiT: (embed_dim, depth, num_heads), patch 16, MLP ratio 4 (infocam_jax/models/deit.py).
_DEIT = {"deit_tiny": (192, 12, 3), "deit_small": (384, 12, 6), "deit_base": (768, 12, 12)}
_VGG16_GAP = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, 1024)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 (x4) with identity or projection shortcut."""

    def __init__(self, inp: int, width: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(inp, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(True), nn.Conv2d(width, width * 4, 1, bias=False),
            nn.BatchNorm2d(width * 4))
        self.down = None
        if stride != 1 or inp != width * 4:
            self.down = nn.Sequential(nn.Conv2d(inp, width * 4, 1, stride, bias=False),
                                      nn.BatchNorm2d(width * 4))

    def forward(self, x):
        return torch.relu(self.body(x) + (x if self.down is None else self.down(x)))


class Net(nn.Module):
    """Backbone + GAP + Linear; ``forward`` returns ``(logits, features)``."""

    def __init__(self, arch: str, num_classes: int):
        super().__init__()
        if arch == "resnet50":
            layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(True),
                      nn.MaxPool2d(3, 2, 1)]
            inp = 64
            for n, width, stride in ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 1)):
                for i in range(n):
                    layers.append(Bottleneck(inp, width, stride if i == 0 else 1))
                    inp = width * 4
        elif arch == "vgg16_gap":
            layers, inp = [], 3
            for v in _VGG16_GAP:
                if v == "M":
                    layers.append(nn.MaxPool2d(2, 2))
                else:
                    layers += [nn.Conv2d(inp, v, 3, padding=1), nn.ReLU(True)]
                    inp = v
        else:
            raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(inp, num_classes)

    def forward(self, x):
        f = self.features(x)
        return self.fc(f.mean(dim=(2, 3))), f


class Attention(nn.Module):
    """timm's ``Attention``: one ``qkv`` Linear, scaled dot-product attention, ``proj``."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(
            2, 0, 3, 1, 4)
        out = nn.functional.scaled_dot_product_attention(q, k, v)  # [B, heads, N, d / heads]
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm ``x + attn(norm1(x))``, ``x + mlp(norm2(x))`` (MLP 4D, exact GELU)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DeiT(nn.Module):
    """DeiT (patch 16, class token, learned position embeddings for 224x224) with the token-GAP
    head: ``forward`` gives (logits [B, M] of the mean normed patch token, features
    [B, D, h, w] the normed patch tokens)."""

    def __init__(self, arch: str, num_classes: int, img_size: int = 224, patch: int = 16):
        super().__init__()
        dim, depth, heads = _DEIT[arch]
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (img_size // patch) ** 2, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        p = self.patch_embed(x)                                         # [B, D, h, w]
        b, d, h, w = p.shape
        if 1 + h * w != self.pos_embed.shape[1]:
            raise ValueError(f"x: the position embeddings are for {self.pos_embed.shape[1] - 1} "
                             f"patches, got {h}x{w}")
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), p.flatten(2).transpose(1, 2)], 1)
        tokens = self.norm(self.blocks(tokens + self.pos_embed))[:, 1:]  # [B, h*w, D]
        return self.head(tokens.mean(1)), tokens.transpose(1, 2).reshape(b, d, h, w)


def build(arch: str, num_classes: int, img_size: int = 224) -> nn.Module:
    """The PyTorch twin of ``infocam_jax.models.create(arch, num_classes)`` (DeiT: token-GAP
    head, position embeddings for ``img_size``)."""
    if arch in _DEIT:
        return DeiT(arch, num_classes, img_size)
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    return Net(arch, num_classes)
