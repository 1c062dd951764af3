"""Maps on the DeiT backbone: post-hoc maps at any block, attention rollout, TS-CAM's map.

* A block's tokens are read on the patch grid, class / distillation tokens dropped: our
  Grad-CAM and Score-CAM at two blocks equal pytorch-grad-cam's with its
  ``vit_reshape_transform`` on the PyTorch twin (tests/deit_twin.py) with the same weights.
* Rollout and TS-CAM's map equal NumPy statements of their definitions on the twin's attention.
* Every map kind (CAM family, post-hoc, attention) runs in the eval step on a tiny DeiT, and the
  attention kinds' numbers there equal the library pieces one by one.
"""
import functools

import chex
import gradcam_peer
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import test_evaluate as te  # noqa: E402  (tests/test_evaluate.py: eval config and data)
from posthoc_harness import close

from infocam_jax import boxes, metrics, models
from infocam_jax.evaluation import driver
from infocam_jax.evaluation import settings as eval_settings
from infocam_jax.maps import posthoc
from infocam_jax.maps.posthoc import core
from infocam_jax.models import convert

TINY = dict(patch_size=8, depth=2, embed_dim=24, num_heads=3, img_size=32)
GRID = 4  # 32 / 8


@pytest.fixture(scope="module")
def twin():
    pytest.importorskip("torch", reason="torch is not installed: DeiT map parity skipped")
    return pytest.importorskip("deit_twin")


def _pair(twin, head="tokens_gap", distilled=False, seed=0):
    """(model, variables, torch net returning logits, torch twin) on the same weights."""
    torch = twin.torch
    name = "deit_small_distilled" if distilled else "deit_small"
    net = twin.TorchDeiT(5, distilled=distilled, head=head, **TINY).eval()
    state = twin.synthetic_state(net, seed)
    model = models.create(name, 5, head=head, **TINY)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    variables = convert.convert_state_dict(f"{name}_patch16_224", state, variables,
                                           include_head=not (distilled and head != "cls"))

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.twin = net

        def forward(self, x):
            return self.twin(x)[0]

    return model, jax.tree_util.tree_map(jnp.asarray, variables), Logits().eval(), net


@pytest.fixture(scope="module")
def pairs(twin):
    return {head: _pair(twin, head) for head in ("tokens_gap", "cls")}


def _images(seed=1, batch=2):
    return np.random.default_rng(seed).normal(size=(batch, 32, 32, 3)).astype(np.float32)


class TestBlocksAsLayers:

    def test_layer_paths(self, pairs):
        model, variables, _, _ = pairs["cls"]
        paths = posthoc.layer_paths(model, variables, jnp.zeros((1, 32, 32, 3)))
        assert paths == ("features", "patch_embed", "blocks_0", "blocks_1")

    @pytest.mark.parametrize("distilled", [False, True])
    def test_block_tokens_on_the_grid(self, twin, distilled):
        """forward_at_layer's activation = the twin's block output without the prefix tokens."""
        torch = twin.torch
        model, variables, _, net = _pair(twin, "cls", distilled)
        x = _images()
        seen = {}
        hook = net.blocks[0].register_forward_hook(lambda m, i, o: seen.update(out=o))
        with torch.no_grad():
            net(torch.from_numpy(x).permute(0, 3, 1, 2))
        hook.remove()
        _, activation = core.forward_at_layer(model, variables, x, "blocks_0")
        prefix = 2 if distilled else 1
        expected = seen["out"][:, prefix:].reshape(2, GRID, GRID, -1).numpy()
        close(activation, expected)

    # (The class-token head's Grad-CAM at the last block is zero for both: the class token after
    # the token-wise final norm does not depend on the last block's patch tokens.)
    @pytest.mark.parametrize("head, method, layer", [
        ("tokens_gap", "gradcam", "blocks_0"), ("tokens_gap", "gradcam", "blocks_1"),
        ("cls", "gradcam", "blocks_0"),
        ("tokens_gap", "scorecam", "blocks_0"), ("cls", "scorecam", "blocks_1")])
    def test_equal_to_the_peer_with_its_vit_reshape(self, grad_cam, pairs, head, method, layer):
        torch = pytest.importorskip("torch")
        reshapes = pytest.importorskip("pytorch_grad_cam.utils.reshape_transforms")
        model, variables, net, twin_net = pairs[head]
        x = _images()
        targets = np.array([1, 4])
        options = {"chunk_size": 8} if method == "scorecam" else {}
        ours = posthoc.compute(method, model, variables, x, targets, layer=layer, **options)
        block = twin_net.blocks[int(layer.split("_")[1])]
        peer = gradcam_peer.raw_maps(
            grad_cam, method, net, block, torch.from_numpy(x).permute(0, 3, 1, 2), targets,
            batch_size=options.get("chunk_size"),
            reshape_transform=functools.partial(reshapes.vit_reshape_transform, height=GRID,
                                                width=GRID))
        assert np.abs(peer).max() > 0
        close(ours, peer, rtol=1e-3)


def _attention_np(net, x, torch):
    """The twin's attention probabilities [L, B, heads, N, N] and normed tokens [B, N, D]."""
    with torch.no_grad():
        _, tokens = net(torch.from_numpy(x).permute(0, 3, 1, 2))
    probs = np.stack([b.attn.attention.numpy() for b in net.blocks]).astype(np.float64)
    return probs, tokens.numpy().astype(np.float64)


class TestAttentionMaps:

    @pytest.mark.parametrize("layer, blocks", [("features", 2), ("blocks_0", 1)])
    def test_rollout_is_the_product_of_residual_attention(self, twin, pairs, layer, blocks):
        model, variables, _, net = pairs["cls"]
        x = _images()
        probs, _ = _attention_np(net, x, twin.torch)
        joint = np.eye(probs.shape[-1])[None]
        for a in probs[:blocks].mean(axis=2):  # Abnar & Zuidema: 0.5 A + 0.5 I, multiplied up
            joint = np.einsum("bij,bjk->bik", 0.5 * a + 0.5 * np.eye(a.shape[-1]), joint)
        expected = joint[:, 0, 1:].reshape(2, GRID, GRID)
        ours = posthoc.compute("rollout", model, variables, x, np.array([0, 1]), layer=layer)
        chex.assert_shape(ours, (2, GRID, GRID))
        close(ours, expected)

    def test_tscam_is_attention_times_the_class_map(self, twin, pairs):
        model, variables, _, net = pairs["tokens_gap"]
        x = _images()
        targets = np.array([2, 0])
        probs, tokens = _attention_np(net, x, twin.torch)
        weight = net.head.weight.detach().numpy().astype(np.float64)
        bias = net.head.bias.detach().numpy().astype(np.float64)
        coupling = probs.mean(axis=2).sum(axis=0)[:, 0, 1:]  # TS-CAM: Σ_l mean_heads, cls row
        class_maps = tokens[:, 1:] @ weight.T + bias  # [B, hw, M]
        expected = (coupling * class_maps[np.arange(2), :, targets]).reshape(2, GRID, GRID)
        ours = posthoc.compute("tscam", model, variables, x, targets)
        assert np.any(np.asarray(ours) < 0)  # no ReLU by default, as TS-CAM
        close(ours, expected)
        close(posthoc.compute("tscam", model, variables, x, targets, relu=True),
              np.maximum(expected, 0))

    def test_distilled_drops_both_prefix_tokens(self, twin):
        model, variables, _, net = _pair(twin, "cls", distilled=True)
        x = _images()
        probs, _ = _attention_np(net, x, twin.torch)
        a = probs[0].mean(axis=1)
        expected = (0.5 * a + 0.5 * np.eye(a.shape[-1]))[:, 0, 2:].reshape(2, GRID, GRID)
        close(posthoc.compute("rollout", model, variables, x, np.array([0, 1]),
                              layer="blocks_0"), expected)


def _tiny_deit():
    """deit_tiny at 16x16 (1 channel), patch 4: features [B, 4, 4, 16], M = te.NUM_CLASSES."""
    model = models.create("deit_tiny", te.NUM_CLASSES, patch_size=4, depth=2, embed_dim=16,
                          num_heads=2, img_size=16)
    variables = model.init(jax.random.key(0), jnp.zeros((1, te.SIZE, te.SIZE, 1)))
    return model, variables


def test_every_map_kind_in_the_eval_step():
    model, variables = _tiny_deit()
    data = te.make_data()
    kinds = eval_settings.MAP_KINDS + eval_settings.POSTHOC_MAP_KINDS
    assert {"rollout", "tscam"} <= set(kinds)
    config = te.make_config(map_kinds=kinds, posthoc_layer="features", posthoc_chunk_size=8)
    results = driver.evaluate(config, model, variables, [data], num_devices=1)
    for kind in kinds:
        assert np.isfinite(results[f"{kind}/max_box_acc_v2"]), kind
    settings = eval_settings.EvalSettings.from_config(config)
    images, labels = jnp.asarray(data["image"]), jnp.asarray(data["label"])
    for kind in ("rollout", "tscam"):
        maps = posthoc.compute(kind, model, variables, images, labels)
        sm = boxes.scoremaps(maps, settings.image_size, settings.upsample)
        v2 = metrics.max_box_accuracy_v2(sm, data["boxes"], data["box_valid"],
                                         settings.box_thresholds)
        assert results[f"{kind}/max_box_acc_v2"] == pytest.approx(float(v2["max_box_acc_v2"]))
