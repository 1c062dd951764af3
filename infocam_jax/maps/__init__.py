"""Maps from features: ``cams`` (CAM, infoCAM, infoCAM+, multi-label variants) and ``posthoc``
(the Grad-CAM family, Score-CAM, Eigen-CAM). Pure ``jax.numpy``: features in, maps out."""
