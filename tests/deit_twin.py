"""A PyTorch twin of DeiT with timm's ``deit_*_patch16_224`` parameter names and shapes (no
timm needed), for tests/test_deit.py and tests/test_deit_maps.py.

Needs torch: importing this module without it skips the importing test (``importorskip``).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: the DeiT twin is skipped")

tnn = torch.nn
F = torch.nn.functional


class PatchEmbed(tnn.Module):
    def __init__(self, patch_size, dim):
        super().__init__()
        self.proj = tnn.Conv2d(3, dim, patch_size, patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(tnn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = tnn.Linear(dim, 3 * dim)
        self.proj = tnn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = (q * (d // self.num_heads) ** -0.5) @ k.transpose(-2, -1)
        self.attention = attn.softmax(-1)
        return self.proj((self.attention @ v).transpose(1, 2).reshape(b, n, d))


class Mlp(tnn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = tnn.Linear(dim, hidden)
        self.fc2 = tnn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(tnn.Module):
    def __init__(self, dim, num_heads, mlp_ratio):
        super().__init__()
        self.norm1 = tnn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = tnn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TorchDeiT(tnn.Module):
    """timm's VisionTransformer / VisionTransformerDistilled in eval mode (class-token head;
    distilled: the mean of ``head`` and ``head_dist``), or the token-GAP head ``head`` on the
    mean of the normed patch tokens (``head="tokens_gap"``). ``forward`` returns (logits,
    normed tokens [B, N, D])."""

    def __init__(self, num_classes, embed_dim=384, depth=12, num_heads=6, patch_size=16,
                 img_size=224, mlp_ratio=4.0, distilled=False, head="cls"):
        super().__init__()
        self.prefix = 2 if distilled else 1
        self.head_kind = head
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = tnn.Parameter(torch.zeros(1, 1, embed_dim))
        if distilled:
            self.dist_token = tnn.Parameter(torch.zeros(1, 1, embed_dim))
        grid = img_size // patch_size
        self.grid = grid
        self.pos_embed = tnn.Parameter(torch.zeros(1, self.prefix + grid * grid, embed_dim))
        self.blocks = tnn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio)
                                       for _ in range(depth)])
        self.norm = tnn.LayerNorm(embed_dim, eps=1e-6)
        self.head = tnn.Linear(embed_dim, num_classes)
        if distilled and head == "cls":
            self.head_dist = tnn.Linear(embed_dim, num_classes)

    def _pos_embed(self, h, w):
        """timm's resample_abs_pos_embed: the patch part resized bicubically."""
        pos = self.pos_embed
        if (h, w) == (self.grid, self.grid):
            return pos
        prefix, grid = pos[:, :self.prefix], pos[:, self.prefix:]
        grid = grid.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([prefix, grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)], dim=1)

    def forward(self, x):
        b = x.shape[0]
        p = self.patch_embed.proj.kernel_size[0]
        h, w = x.shape[2] // p, x.shape[3] // p
        tokens = [self.cls_token.expand(b, -1, -1)]
        if self.prefix == 2:
            tokens.append(self.dist_token.expand(b, -1, -1))
        x = torch.cat(tokens + [self.patch_embed(x)], dim=1) + self._pos_embed(h, w)
        x = self.norm(self.blocks(x))
        if self.head_kind == "tokens_gap":
            return self.head(x[:, self.prefix:].mean(1)), x
        logits = self.head(x[:, 0])
        if self.prefix == 2:
            logits = (logits + self.head_dist(x[:, 1])) / 2
        return logits, x


def synthetic_state(net, seed=0, scale=0.2):
    """Random weights (NumPy, seeded) loaded into ``net``; returns the state dict (NumPy)."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, value in net.state_dict().items():
        if key.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            arr = 1.0 + 0.1 * rng.standard_normal(value.shape)
        else:
            arr = scale * rng.standard_normal(value.shape)
        state[key] = arr.astype(np.float32)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return state
