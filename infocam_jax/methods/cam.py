"""CAM (Zhou et al., CVPR 2016): the backbone's GAP + Dense head, trained with the configured
loss on the main logits; the class maps are the head's kernel applied to the GAP input."""
from infocam_jax.methods import base

CAM = base.register(base.Method(
    "cam", doc="Class activation maps of the plain GAP network."))
