"""The authors' optimiser in optax: PyTorch-style SGD with two learning-rate groups.

The authors' PyTorch code (`torch.optim.SGD(..., momentum=0.9, weight_decay=1e-4, nesterov=True)`
with two parameter groups) does, per parameter p with gradient g and group learning rate lr:

    d = g + weight_decay * p               # L2 weight decay added to the gradient (not decoupled)
    buf = momentum * buf + d               # (buf = d on the first step; same thing from buf = 0)
    step = d + momentum * buf  if nesterov else buf
    p = p - lr * step

and multiplies every group's lr by 0.1 at each multiple of `LR_decay` epochs. Here that is
`add_decayed_weights -> trace(nesterov) -> scale_by_learning_rate(schedule)`, and the new layers
(`models.new_layer_mask`) get `lr_ratio * schedule` through `optax.multi_transform`. Because the
decay term sits before the learning-rate scaling, the new layers' weight decay is also scaled by
`lr_ratio`, exactly as in PyTorch's per-group lr.

`optimizer.name = "adamw"` (default "sgd") gives TS-CAM's transformer recipe instead: AdamW
(`torch.optim.AdamW`, betas (0.9, 0.999), eps 1e-8, decoupled weight decay `lr * wd * p`) with
the same step schedule and groups; as timm's `create_optimizer`, only kernels (weight matrices)
decay, not biases, norm scales, class / distillation tokens or position embeddings; `momentum`
and `nesterov` are unused.
"""
from typing import Any, Callable

import jax
import optax

Schedule = Callable[[Any], Any]
OPTIMIZERS = ("sgd", "adamw")


def step_decay_schedule(learning_rate: float, steps_per_epoch: int, decay_epochs: int,
                        decay_factor: float) -> optax.Schedule:
    """LR(step) = learning_rate * decay_factor ** floor(step / (decay_epochs * steps_per_epoch)).

    Args:
      learning_rate: base learning rate (> 0).
      steps_per_epoch: optimiser steps per epoch (>= 1).
      decay_epochs: epochs between decays (>= 1).
      decay_factor: multiplier applied at each decay, in (0, 1].

    Returns:
      An optax schedule mapping the int step count (0 for the first update) to a float LR.
    """
    if learning_rate <= 0:
        raise ValueError(f"optimizer.learning_rate must be > 0, got {learning_rate}")
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    if decay_epochs < 1:
        raise ValueError(f"optimizer.decay_epochs must be >= 1, got {decay_epochs}")
    if not 0 < decay_factor <= 1:
        raise ValueError(f"optimizer.decay_factor must be in (0, 1], got {decay_factor}")
    return optax.exponential_decay(
        init_value=learning_rate,
        transition_steps=decay_epochs * steps_per_epoch,
        decay_rate=decay_factor,
        staircase=True)


def pytorch_sgd(learning_rate: float | Schedule, momentum: float, nesterov: bool,
                weight_decay: float) -> optax.GradientTransformation:
    """`torch.optim.SGD(lr, momentum, weight_decay, nesterov, dampening=0)` as an optax chain."""
    if not 0 <= momentum < 1:
        raise ValueError(f"optimizer.momentum must be in [0, 1), got {momentum}")
    if weight_decay < 0:
        raise ValueError(f"optimizer.weight_decay must be >= 0, got {weight_decay}")
    parts = []
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    if momentum:
        parts.append(optax.trace(decay=momentum, nesterov=nesterov))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*parts)


def create_optimizer(optimizer_config, steps_per_epoch: int, new_layer_mask: Any = None
                     ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Builds the training optimiser and its base learning-rate schedule.

    Args:
      optimizer_config: the `config.optimizer` ConfigDict (learning_rate, lr_ratio, momentum,
        nesterov, weight_decay, decay_epochs, decay_factor; optional name, "sgd" or "adamw").
      steps_per_epoch: optimiser steps per epoch.
      new_layer_mask: pytree of bools with the structure of the params, True for the layers
        that get `lr_ratio` x the learning rate (`models.new_layer_mask`); None = one group.

    Returns:
      (tx, schedule): the optax transformation and the base-LR schedule (for logging).
    """
    oc = optimizer_config
    schedule = step_decay_schedule(oc.learning_rate, steps_per_epoch, oc.decay_epochs,
                                   oc.decay_factor)

    name = oc.get("name", "sgd")
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name must be one of {OPTIMIZERS}, got {name!r}")

    def sgd(scale: float) -> optax.GradientTransformation:
        lr = schedule if scale == 1.0 else (lambda count: scale * schedule(count))
        if name == "adamw":
            return optax.adamw(lr, eps=1e-8, weight_decay=oc.weight_decay, mask=_kernels)
        return pytorch_sgd(lr, oc.momentum, bool(oc.nesterov), oc.weight_decay)

    ratio = float(oc.lr_ratio)
    if ratio <= 0:
        raise ValueError(f"optimizer.lr_ratio must be > 0, got {ratio}")
    if new_layer_mask is None or ratio == 1.0:
        return sgd(1.0), schedule
    labels = jax.tree.map(lambda new: "new" if new else "pretrained", new_layer_mask)
    tx = optax.multi_transform({"pretrained": sgd(1.0), "new": sgd(ratio)}, labels)
    return tx, schedule


def _kernels(params):
    """True for the leaves named ``kernel`` (the weight decay mask of AdamW)."""
    return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "kernel", params)
