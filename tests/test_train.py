"""Tests of the training stack: optimiser maths, data parallelism, multi-process lockstep,
kill-and-resume, NaN abort and the batch-divisibility error.

Multi-device runs happen in subprocesses (XLA_FLAGS must be set before JAX is imported); they
use a tiny stand-in Conv-BatchNorm-GAP-Dense network defined in the worker below (a real
model's BatchNorm at this size; VGG/ResNet would only add compile time) with the library's
optimiser, loss and per-device step. The two-process tests (lockstep, launcher) skip only when a
probe, run after a failed two-process run, finds that this JAX cannot run CPU multi-process
collectives.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap

import chex
import jax
import ml_collections
import numpy as np
import pytest

from infocam_jax import devices
from infocam_jax.experiments import training
from infocam_jax.train import optim

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import tiny  # noqa: E402  (tests/tiny.py)

# Same global batches, seed and maths on 1 device, 4 devices or 2 processes: only the order of
# float32 reductions differs, so parameters agree to float32 rounding.
PARALLEL_ATOL = 1e-5
PARALLEL_RTOL = 1e-5


# ----------------------------------------------------------------------------- optimiser

def _optimizer_config(**kw):
    base = dict(learning_rate=0.1, lr_ratio=10.0, momentum=0.9, nesterov=True,
                weight_decay=1e-2, decay_epochs=2, decay_factor=0.1)
    base.update(kw)
    return ml_collections.ConfigDict(base)


def _torch_sgd_reference(params, grads_per_step, lrs, momentum, weight_decay, nesterov):
    """NumPy statement of torch.optim.SGD.step (dampening 0) for one parameter group."""
    p = {k: v.astype(np.float64).copy() for k, v in params.items()}
    buf = {k: None for k in p}
    for grads, lr in zip(grads_per_step, lrs):
        for k in p:
            d = grads[k] + weight_decay * p[k]
            buf[k] = d.copy() if buf[k] is None else momentum * buf[k] + d
            step = d + momentum * buf[k] if nesterov else buf[k]
            p[k] = p[k] - lr * step
    return p


@pytest.mark.parametrize("nesterov", [True, False])
def test_optimizer_matches_pytorch_sgd_with_two_groups_and_step_decay(nesterov):
    rng = np.random.default_rng(0)
    params = {"body": rng.normal(size=(3, 2)).astype(np.float32),
              "head": rng.normal(size=(2,)).astype(np.float32)}
    mask = {"body": False, "head": True}
    steps_per_epoch, num_steps = 3, 8  # decays after steps 6 (epoch 2)
    grads = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
             for _ in range(num_steps)]
    oc = _optimizer_config(nesterov=nesterov)
    tx, schedule = optim.create_optimizer(oc, steps_per_epoch, mask)
    state = tx.init(params)
    p = params
    for g in grads:
        updates, state = tx.update(g, state, p)
        p = jax.tree.map(lambda a, u: a + u, p, updates)
    lrs = [0.1 * 0.1 ** (s // (2 * steps_per_epoch)) for s in range(num_steps)]
    np.testing.assert_allclose([float(schedule(s)) for s in range(num_steps)], lrs, rtol=1e-6)
    ref_body = _torch_sgd_reference({"body": params["body"]}, [{"body": g["body"]} for g in grads],
                                    lrs, 0.9, 1e-2, nesterov)
    ref_head = _torch_sgd_reference({"head": params["head"]}, [{"head": g["head"]} for g in grads],
                                    [10 * lr for lr in lrs], 0.9, 1e-2, nesterov)
    np.testing.assert_allclose(p["body"], ref_body["body"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p["head"], ref_head["head"], rtol=1e-5, atol=1e-6)


def test_optimizer_single_group_without_mask_or_ratio_one():
    params = {"w": np.ones((2,), np.float32)}
    for mask, ratio in ((None, 10.0), ({"w": True}, 1.0)):
        tx, _ = optim.create_optimizer(_optimizer_config(lr_ratio=ratio, weight_decay=0.0,
                                                         momentum=0.0), 1, mask)
        updates, _ = tx.update({"w": np.ones(2, np.float32)}, tx.init(params), params)
        np.testing.assert_allclose(updates["w"], [-0.1, -0.1], rtol=1e-6)


@pytest.mark.parametrize("field,value", [("learning_rate", 0.0), ("decay_epochs", 0),
                                         ("decay_factor", 1.5), ("momentum", 1.0),
                                         ("lr_ratio", -1.0), ("weight_decay", -1e-4)])
def test_optimizer_rejects_bad_settings(field, value):
    with pytest.raises(ValueError, match=field):
        optim.create_optimizer(_optimizer_config(**{field: value}), 4, None)


def test_shard_batch_reshapes_and_rejects_uneven():
    batch = {"image": np.arange(8 * 2, dtype=np.float32).reshape(8, 2), "label": np.arange(8)}
    out = devices.shard(batch, 4)
    chex.assert_shape(out["image"], (4, 2, 2))
    np.testing.assert_array_equal(out["label"][1], [2, 3])
    with pytest.raises(ValueError, match="not divisible by 3"):
        devices.shard(batch, 3)


# ----------------------------------------------------------------------------- parallel runs

WORKER = textwrap.dedent('''
    import json, os, sys
    mode, out = sys.argv[1], sys.argv[2]
    import jax
    if mode == "dist":
        pid, port = int(sys.argv[3]), sys.argv[4]
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=pid)
    import flax.linen as nn
    import flax
    import ml_collections
    import numpy as np
    sys.path.insert(0, os.environ["REPO"])
    from infocam_jax import devices
    from infocam_jax.train import optim, trainer, state as ts
    from infocam_jax.experiments import training

    class TinyBN(nn.Module):
        """Conv-BatchNorm-ReLU-GAP-Dense returning (logits, features), BN synced on "batch"."""
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.Conv(4, (3, 3), name="conv")(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                             axis_name="batch" if train else None, name="bn")(x)
            feats = nn.relu(x)
            return nn.Dense(3, name="head")(feats.mean((1, 2))), feats

    config = ml_collections.ConfigDict(dict(loss="softmax", multi_label=False))
    oc = ml_collections.ConfigDict(dict(learning_rate=0.1, lr_ratio=10.0, momentum=0.9,
        nesterov=True, weight_decay=1e-4, decay_epochs=1, decay_factor=0.1))
    model = TinyBN()
    variables = ts.init_variables(model, jax.random.PRNGKey(0), (8, 8, 1))
    np.savez(out + ".init.npz", **flax.traverse_util.flatten_dict(variables, sep="/"))
    mask = jax.tree_util.tree_map_with_path(lambda p, _: p[0].key == "head", variables["params"])
    tx, _ = optim.create_optimizer(oc, 2, mask)
    step = ts.parallelize(lambda s, b, k: ts.train_step(
        s, b, k, model=model, tx=tx, loss_fn=trainer.make_loss_fn(config, None),
        multi_label=False))
    p_state = devices.replicate(ts.create_train_state(variables, tx))
    key = devices.replicate(jax.random.PRNGKey(1))
    rng = np.random.default_rng(0)
    P, p = jax.process_count(), jax.process_index()
    losses = []
    for i in range(3):
        image = rng.normal(size=(8, 8, 8, 1)).astype(np.float32) * (1 + i)
        label = rng.integers(0, 3, size=8).astype(np.int32)
        lo, hi = p * 8 // P, (p + 1) * 8 // P
        batch = devices.shard({"image": image[lo:hi], "label": label[lo:hi]},
                               jax.local_device_count())
        p_state, metrics = step(p_state, batch, key)
        losses.append(float(devices.unreplicate(metrics)["loss"]))
    state = devices.unreplicate(p_state)
    flat = flax.traverse_util.flatten_dict(state.variables, sep="/")
    errors = {}
    if mode == "local" and jax.device_count() == 4:
        for b in (6, 2):
            try:
                devices.check_batch_divisible(b)
            except ValueError as e:
                errors[str(b)] = str(e)
        bad = ml_collections.ConfigDict(dict(loss="softmax", multi_label=False, batch_size=6,
                                             eval_batch_size=8, num_epochs=1))
        try:
            training.train_and_evaluate(bad, os.path.join(os.path.dirname(out), "bad_workdir"))
        except ValueError as e:
            errors["train_and_evaluate"] = str(e)
    np.savez(out, **flat)
    with open(out + ".json", "w") as f:
        json.dump({"losses": losses, "devices": jax.device_count(),
                   "local_devices": jax.local_device_count(), "errors": errors,
                   "step": int(state.step)}, f)
''')


def _worker_env(devices: int) -> dict:
    env = dict(os.environ, REPO=REPO, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return env


def _load(out):
    with np.load(out) as f:
        params = {k: f[k] for k in f.files}
    with open(out + ".json") as f:
        return params, json.load(f)


@pytest.fixture(scope="module")
def parallel_runs(tmp_path_factory):
    """Runs the worker on 1 device and on 4 simulated devices (in parallel subprocesses)."""
    tmp = tmp_path_factory.mktemp("parallel")
    script = tmp / "worker.py"
    script.write_text(WORKER)
    procs, outs = {}, {}
    for count in (1, 4):
        outs[count] = str(tmp / f"local{count}.npz")
        procs[count] = subprocess.Popen(
            [sys.executable, str(script), "local", outs[count]], env=_worker_env(count),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    results = {}
    for count, proc in procs.items():
        log, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{count}-device worker failed:\n{log[-3000:]}"
        results[count] = _load(outs[count])
    return tmp, script, results


def test_four_devices_match_one_device(parallel_runs):
    _, _, results = parallel_runs
    (p1, info1), (p4, info4) = results[1], results[4]
    assert info1["devices"] == 1 and info4["devices"] == 4
    assert info1["step"] == info4["step"] == 3
    assert set(p1) == set(p4)
    assert any(k.startswith("batch_stats/bn/") for k in p1), "BN statistics are compared too"
    for k in p1:
        np.testing.assert_allclose(p4[k], p1[k], atol=PARALLEL_ATOL, rtol=PARALLEL_RTOL,
                                   err_msg=k)
    np.testing.assert_allclose(info4["losses"], info1["losses"], rtol=1e-5)
    # The run did learn something: every parameter moved from its initial value, except the
    # conv bias, whose gradient the following BatchNorm cancels (it starts at 0: no decay).
    with np.load(parallel_runs[0] / "local1.npz.init.npz") as f:
        init = {k: f[k] for k in f.files}
    assert set(init) == set(p1)
    for k in p1:
        if k.startswith("params/"):
            moved = np.abs(p1[k] - init[k]).max()
            assert (moved < 1e-6) if k == "params/conv/bias" else (moved > 1e-3), (k, moved)


def test_batch_not_divisible_by_devices_is_a_clear_error(parallel_runs):
    _, _, results = parallel_runs
    errors = results[4][1]["errors"]
    for key in ("6", "2", "train_and_evaluate"):
        assert key in errors, f"no error raised for {key}"
    assert "config.batch_size=6" in errors["6"] and "4" in errors["6"]
    assert "multiple of the number of devices" in errors["train_and_evaluate"]


PROBE = textwrap.dedent('''
    import sys
    import jax
    import numpy as np
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{sys.argv[2]}", num_processes=2,
                               process_id=int(sys.argv[1]))
    ones = np.ones((jax.local_device_count(),), np.float32)
    total = jax.pmap(lambda x: jax.lax.psum(x, "i"), axis_name="i")(ones)
    print("psum", float(total[0]))
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run_two_processes(argv, cwd, timeout):
    """Starts ``argv + [process id]`` twice (1 CPU device each); returns (returncodes, logs)."""
    procs = [subprocess.Popen(argv(i), cwd=cwd, env=_worker_env(1), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        logs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [p.returncode for p in procs], logs


def _two_process_run(argv, cwd, timeout, tmp):
    """``_run_two_processes``; where a process failed or timed out, probes whether this JAX runs
    CPU multi-process collectives at all (a 2-process psum) and skips when it does not.

    The probe runs only after a failure, never on a passing run: the only reason the
    multi-process tests below may skip is a failing probe; any failure after a passing probe is
    a failure of the code under test.
    """
    try:
        codes, logs = _run_two_processes(argv, cwd, timeout)
    except subprocess.TimeoutExpired:
        codes, logs = None, None
    if codes == [0, 0]:
        return codes, logs
    _skip_without_cpu_collectives(tmp)
    if codes is None:
        pytest.fail(f"the two processes did not finish in {timeout} s, though a 2-process psum "
                    "probe passed")
    return codes, logs


def _skip_without_cpu_collectives(tmp):
    script = tmp / "probe.py"
    script.write_text(PROBE)
    port = str(_free_port())
    try:
        codes, logs = _run_two_processes(
            lambda i: [sys.executable, str(script), str(i), port], None, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.skip("probe: a 2-process jax.distributed psum on localhost did not finish in "
                    "120 s, so this JAX/host cannot run CPU multi-process collectives")
    if codes != [0, 0] or not all(log.rstrip().endswith("psum 2.0") for log in logs):
        pytest.skip("probe: this JAX build cannot run CPU multi-process collectives (a 2-process "
                    f"jax.distributed psum on localhost gave exit codes {codes}):\n"
                    + logs[0][-1500:])


def test_two_processes_train_in_lockstep(parallel_runs):
    tmp, script, results = parallel_runs
    port = str(_free_port())
    outs = [str(tmp / f"dist{i}.npz") for i in range(2)]
    codes, logs = _two_process_run(
        lambda i: [sys.executable, str(script), "dist", outs[i], str(i), port], None, 300, tmp)
    for i, code in enumerate(codes):
        assert code == 0, f"process {i} failed:\n{logs[i][-3000:]}"
    (d0, i0), (d1, i1) = _load(outs[0]), _load(outs[1])
    p1, info1 = results[1]
    assert i0["devices"] == i1["devices"] == 2 and i0["local_devices"] == 1
    for k in p1:
        np.testing.assert_array_equal(d0[k], d1[k], err_msg=f"processes diverged at {k}")
        np.testing.assert_allclose(d0[k], p1[k], atol=PARALLEL_ATOL, rtol=PARALLEL_RTOL,
                                   err_msg=k)
    assert i0["losses"] == i1["losses"]


# ----------------------------------------------------------------------------- full loop

def _tiny_config(**overrides):
    """tests/tiny.py's config with 2 steps per epoch over 3 epochs, 1 eval batch."""
    c = tiny.tiny_config(num_train_examples=32, num_epochs=3, max_steps_per_epoch=2,
                         keep_checkpoints=2, log_every_steps=1)
    c.optimizer.learning_rate = 0.1
    c.optimizer.lr_ratio = 1.0
    c.optimizer.decay_epochs = 2
    for k, v in overrides.items():
        c[k] = v
    return c


@pytest.fixture(scope="module")
def train_lib():
    from infocam_jax.train import trainer  # pylint: disable=import-outside-toplevel
    return trainer


@pytest.fixture(scope="module")
def uninterrupted(train_lib, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    results = training.train_and_evaluate(_tiny_config(), workdir)
    return workdir, results


def _killing_make_iterator(real, kill_epoch, after_batches):
    """Wraps data.make_iterator: the training iterator of `kill_epoch` dies mid-epoch."""

    def make_iterator(config, split, **kw):
        it = real(config, split, **kw)
        if split != "train" or kw.get("epoch") != kill_epoch:
            return it

        def dying():
            for i, batch in enumerate(it):
                if i == after_batches:
                    raise KeyboardInterrupt("simulated kill")
                yield batch
        return dying()

    return make_iterator


def test_kill_and_resume_reaches_the_uninterrupted_state(train_lib, uninterrupted, tmp_path,
                                                         monkeypatch):
    from infocam_jax import data
    from infocam_jax.train import checkpoints  # pylint: disable=import-outside-toplevel
    workdir_a, results_a = uninterrupted
    workdir_b = str(tmp_path)
    config = _tiny_config()
    # Killed in the middle of the third epoch (after two finished, checkpointed epochs).
    monkeypatch.setattr(data, "make_iterator", _killing_make_iterator(data.make_iterator, 2, 1))
    with pytest.raises(KeyboardInterrupt):
        training.train_and_evaluate(config, workdir_b)
    monkeypatch.undo()
    assert sorted(os.listdir(os.path.join(workdir_b, checkpoints.LATEST_DIR))) == ["1", "2"]
    results_b = training.train_and_evaluate(config, workdir_b)  # resumes at epoch 2
    extras = {}
    for which in ("latest", "best"):
        va, ea = train_lib.restore_variables(config, workdir_a, which)
        vb, eb = train_lib.restore_variables(config, workdir_b, which)
        chex.assert_trees_all_equal(va, vb)
        np.testing.assert_equal(ea, eb)
        extras[which] = ea
    assert extras["latest"]["epoch"] == 3 and extras["latest"]["step"] == 6
    assert len(extras["latest"]["label_prior"]) == 10
    np.testing.assert_equal(results_a, results_b)  # NaN (absent digit) == NaN here
    # The optimiser state (momentum buffers, step counts) is identical too.
    ref = train_lib.restore_variables(config, workdir_a, "latest")[0]
    from infocam_jax import models  # pylint: disable=import-outside-toplevel
    from infocam_jax.train import optim as optim_lib
    tx, _ = optim_lib.create_optimizer(config.optimizer, 2,
                                       models.new_layer_mask(config.model, ref["params"]))
    target_opt = tx.init(ref["params"])
    opts = [checkpoints.Checkpointer(w, 2).restore_latest(ref, target_opt)[1]
            for w in (workdir_a, workdir_b)]
    chex.assert_trees_all_equal(*opts)


def test_best_checkpoint_is_the_best_validation_epoch(train_lib, tmp_path, monkeypatch):
    real = train_lib._run_evaluators
    scripted = iter([0.3, 0.7, 0.7])  # epoch 3 ties epoch 2: the earlier epoch stays best

    def fake_run_evaluators(config, model, variables, evals, split):
        results = real(config, model, variables, evals, split)
        if split == "validation":
            results["classification"]["accuracy"] = next(scripted)
        return results

    monkeypatch.setattr(train_lib, "_run_evaluators", fake_run_evaluators)
    config = _tiny_config()
    results = training.train_and_evaluate(config, str(tmp_path))
    _, best = train_lib.restore_variables(config, str(tmp_path), "best")
    _, latest = train_lib.restore_variables(config, str(tmp_path), "latest")
    assert (best["epoch"], best["val_accuracy"]) == (2, 0.7)
    assert latest["epoch"] == 3 and latest["best_epoch"] == 2
    assert results["epoch"] == 2.0  # the test split was evaluated with the best epoch
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["epoch"] == 2.0 and 0.0 <= on_disk["cls_acc"] <= 1.0


def test_nan_loss_aborts_with_a_clear_message(train_lib, tmp_path, monkeypatch):
    from infocam_jax import data
    from infocam_jax.train import checkpoints  # pylint: disable=import-outside-toplevel
    real = data.make_iterator

    def poisoned(config, split, **kw):
        # NaN targets (NaN images would not do: XLA's CPU max() maps relu(NaN) to 0 under jit).
        for batch in real(config, split, **kw):
            if split == "train":
                batch = dict(batch, labels=np.full_like(batch["labels"], np.nan))
            yield batch

    monkeypatch.setattr(data, "make_iterator", poisoned)
    with pytest.raises(train_lib.NonFiniteLossError, match=r"training loss became nan by step 1"):
        training.train_and_evaluate(_tiny_config(), str(tmp_path))
    manager = checkpoints.Checkpointer(str(tmp_path), 1)
    assert manager.latest_epoch() is None  # nothing saved from the poisoned epoch


@pytest.mark.slow
def test_launcher_with_two_processes_and_jax_distributed(tmp_path):
    """launch/train.py --jax_distributed on localhost: shared orbax checkpoints, one results.json.

    The digits runlocal smoke run at 16x32 (one epoch of 2 steps, validation and test).
    """
    port = _free_port()
    cmd = [sys.executable, "launch/train.py", "--config=configs/digits.py:runlocal",
           "--config.dataset=synthetic", "--config.heads=('pc_sigmoid',)",
           "--config.image_size=(16, 32)", f"--workdir={tmp_path}", "--jax_distributed",
           f"--coordinator_address=localhost:{port}", "--num_processes=2"]
    codes, logs = _two_process_run(lambda i: cmd + [f"--process_id={i}"], REPO, 600, tmp_path)
    for i, code in enumerate(codes):
        assert code == 0, f"process {i} failed:\n{logs[i][-3000:]}"
    assert "2 global devices" in logs[0]
    head = tmp_path / "pc_sigmoid"
    results = json.loads((head / "results.json").read_text())
    # The 8 test images (16 synthetic canvases, split validation / test), 4 per process: the
    # counts were summed over both processes.
    assert results["num_images"] == 8 and 0.0 <= results["cls_acc"] <= 1.0
    assert sorted(os.listdir(head / "checkpoints")) == ["1"]
    assert "# Summary over heads" in logs[0] and "# Summary over heads" not in logs[1]


@pytest.mark.parametrize("multi_label, prior, expected", [
    (True, [0.0, 0.25, 1.0], [0.05, 0.25, 0.95]),    # never / always present: half an example
    (False, [0.0, 0.5, 0.5], [0.05, 0.5, 0.5]),      # unseen class; no upper clip single-label
    (True, [0.1, 0.2, 0.7], [0.1, 0.2, 0.7]),        # already usable: unchanged
])
def test_usable_prior_moves_only_degenerate_labels(multi_label, prior, expected):
    from infocam_jax.train import trainer  # pylint: disable=import-outside-toplevel
    got = trainer.usable_prior(np.array(prior), num_train=10, multi_label=multi_label)
    np.testing.assert_allclose(got, expected)
    assert np.all(np.isfinite(np.log(got)))
