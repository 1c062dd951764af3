"""Train state, the per-device train step and its data-parallel wrapper.

`train_step` is written for one device and only talks to the others through `lax.pmean` /
`lax.axis_index` on `axis_name`; `parallelize` wraps it with `jax.pmap`. Moving to
`jax.shard_map` is a change of that one wrapper line (the step itself does not change).
"""
import functools
from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

AXIS_NAME = "batch"
PyTree = Any
LossFn = Callable[[jax.Array, Mapping[str, jax.Array]], jax.Array]


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (a pytree; replicated across devices).

    Attributes:
      step: int32 [] optimiser steps taken so far.
      params: model parameters.
      batch_stats: BatchNorm running statistics ({} for models without BatchNorm).
      opt_state: optax state.
    """
    step: jax.Array
    params: PyTree
    batch_stats: PyTree
    opt_state: PyTree

    @property
    def variables(self) -> dict:
        """The Flax variables dict `{"params", "batch_stats"}` (no batch_stats when empty)."""
        variables = {"params": self.params}
        if self.batch_stats:
            variables["batch_stats"] = self.batch_stats
        return variables


def init_variables(model, rng: jax.Array, image_shape: tuple[int, int, int]) -> dict:
    """Initialises the model's variables on a dummy batch of 2 images.

    Args:
      model: a Flax linen module from `models.create`.
      rng: PRNG key.
      image_shape: (H, W, C) of the network input.

    Returns:
      dict of plain nested dicts `{"params": ..., "batch_stats": ...}` on the host (numpy).
    """
    dummy = jnp.zeros((2, *image_shape), jnp.float32)
    params_rng, adl_rng = jax.random.split(rng)
    variables = jax.jit(functools.partial(model.init, train=False))(
        {"params": params_rng, "adl": adl_rng}, dummy)
    variables = flax.core.unfreeze(variables)
    return jax.tree.map(np.asarray, variables)


def create_train_state(variables: Mapping[str, PyTree], tx: optax.GradientTransformation
                       ) -> TrainState:
    """Builds the initial TrainState (step 0) from model variables and an optimiser."""
    params = variables["params"]
    return TrainState(
        step=np.zeros((), np.int32),
        params=params,
        batch_stats=dict(variables.get("batch_stats", {})),
        opt_state=jax.tree.map(np.asarray, tx.init(params)))


def train_step(state: TrainState, batch: Mapping[str, jax.Array], root_key: jax.Array, *,
               model, tx: optax.GradientTransformation, loss_fn: LossFn,
               multi_label: bool, axis_name: str = AXIS_NAME, method=None
               ) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SGD step on this device's shard of the global batch.

    Gradients, BatchNorm statistics and metrics are averaged over `axis_name` (the shards have
    equal sizes, so the mean of the per-device mean losses is the global-batch mean loss).
    The ADL key is `fold_in(fold_in(root_key, step), device index)`: a pure function of the step,
    so a resumed run draws the same masks as an uninterrupted one.

    Args:
      state: this device's replica of the TrainState.
      batch: this device's shard: "image" float32 [b, H, W, C], "label" int32 [b], and for
        multi-label sets "labels" float32 [b, M].
      root_key: PRNG key (the same on all devices).
      model: Flax module; `apply(..., train=True, rngs={"adl": k, "dropout": k'},
        mutable=["batch_stats"])` (k' = fold_in(k, 1): InceptionV3's neck dropout)
        returns ((logits [b, M], features [b, h, w, K]), updated collections).
      tx: optax transformation.
      loss_fn: (logits [b, M], batch) -> scalar mean loss over the shard.
      multi_label: whether targets are multi-hot (then no top-1 accuracy is reported).
      axis_name: the collective axis name of the wrapper.
      method: None (the plain step above) or a `methods.TrainMethod` (`Method.train_step`),
        whose batch transform (drawn from `fold_in(root_key, step)`) runs before the forward
        pass and whose loss replaces `loss_fn` (a label mix, auxiliary terms). Accuracy is always top-1 of the
        main logits against `batch["label"]`.

    Returns:
      (new_state, metrics) with metrics {"loss": [], "accuracy": [] (single-label only)},
      already averaged across devices.
    """
    step_key = jax.random.fold_in(root_key, state.step)
    device = lax.axis_index(axis_name)
    key = jax.random.fold_in(step_key, device)
    mix = None
    if method is not None and method.transform is not None:
        batch, mix = method.transform(batch, step_key, device)

    def compute_loss(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        if method is None:
            (logits, _), updated = model.apply(
                variables, batch["image"], train=True,
                rngs={"adl": key, "dropout": jax.random.fold_in(key, 1)},
                mutable=["batch_stats"])
            return loss_fn(logits, batch), (logits, updated)
        outputs, updated = method.forward(model, variables, batch, key)
        return method.loss(outputs, batch, mix), (outputs[0], updated)

    (loss, (logits, updated)), grads = jax.value_and_grad(compute_loss, has_aux=True)(
        state.params)
    grads = lax.pmean(grads, axis_name)
    batch_stats = lax.pmean(dict(updated.get("batch_stats", {})), axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss}
    if not multi_label:
        metrics["accuracy"] = jnp.mean(
            (jnp.argmax(logits, axis=-1) == batch["label"]).astype(jnp.float32))
    metrics = lax.pmean(metrics, axis_name)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    return new_state, metrics


def parallelize(step_fn: Callable, axis_name: str = AXIS_NAME) -> Callable:
    """Data-parallel wrapper of a per-device step over all devices (the one line to swap).

    Args of the result: (replicated state [D, ...], sharded batch [D, b, ...], replicated key).
    """
    return jax.pmap(step_fn, axis_name=axis_name, donate_argnums=(0,))
