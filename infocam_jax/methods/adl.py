"""ADL: Attention-based Dropout Layer (Choe & Shim, CVPR 2019), as a WSOL method.

The layers themselves are a backbone capability (``models/adl.py``; a backbone names its ADL
positions). The method builds the backbone's "adl" layout: ADL at the backbone's reference
positions unless ``model_options.adl_positions`` names others (``models.create``), and ADL's
neck where the backbone has one (InceptionV3: no neck dropout). Loss and readout are CAM's.
"""
from infocam_jax.methods import base

ADL = base.register(base.Method(
    "adl", layout="adl",
    doc="Attention-based Dropout Layers at the backbone's ADL positions (GAP network)."))
