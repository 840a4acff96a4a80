"""The training loop: reproducibility, exact resume, logs, configs and data."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from dfst.checkpoint import load_checkpoint
from dfst.data import coverage
from dfst.training import TrainConfig, TrainingError, train
from dfst.training.loop import LOG_FILE, MODEL_FILE, cosine_learning_rate, training_pairs
from dfst.training.state import STATE_FILE

SMALL = TrainConfig(task="add2", iterations=60, checkpoint_every=20, log_every=5)


def _log(out_dir):
    return [json.loads(line) for line in (out_dir / LOG_FILE).read_text().splitlines()]


def _losses(out_dir):
    return [record["loss"] for record in _log(out_dir) if "loss" in record]


def test_same_seed_same_curve(tmp_path):
    first = train(SMALL, tmp_path / "a")
    second = train(SMALL, tmp_path / "b")
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    assert load_checkpoint(first.model_path)[0].sha256() == load_checkpoint(second.model_path)[0].sha256()


def test_other_seed_other_curve(tmp_path):
    train(SMALL, tmp_path / "a")
    train(dataclasses.replace(SMALL, seed=1), tmp_path / "b")
    assert _losses(tmp_path / "a") != _losses(tmp_path / "b")


def test_loss_decreases(tmp_path):
    result = train(dataclasses.replace(SMALL, iterations=300, log_every=50), tmp_path)
    losses = _losses(tmp_path)
    assert losses[-1] < losses[0]
    assert result.completed
    assert result.iterations_done == 300


def test_stop_and_resume_is_bit_identical(tmp_path):
    reference = train(SMALL, tmp_path / "reference")
    polls = []

    def stop_after_33():
        polls.append(1)
        return len(polls) > 33

    stopped = train(SMALL, tmp_path / "resumed", should_stop=stop_after_33)
    assert not stopped.completed
    assert stopped.iterations_done == 33
    assert stopped.model_path is None
    resumed = train(SMALL, tmp_path / "resumed")
    assert resumed.completed
    assert load_checkpoint(resumed.model_path)[0].sha256() == load_checkpoint(reference.model_path)[0].sha256()
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "reference")


class _Crash(Exception):
    pass


def test_crash_loses_only_work_since_checkpoint(tmp_path):
    reference = train(SMALL, tmp_path / "reference")

    def crash_at_35(record):
        if record["iteration"] == 35:
            raise _Crash

    with pytest.raises(_Crash):
        train(SMALL, tmp_path / "crashed", progress=crash_at_35)
    # the last checkpoint before the crash was at iteration 20
    state_iterations = [r["iteration"] for r in _log(tmp_path / "crashed")]
    assert max(state_iterations) == 35
    resumed = train(SMALL, tmp_path / "crashed")
    assert load_checkpoint(resumed.model_path)[0].sha256() == load_checkpoint(reference.model_path)[0].sha256()
    iterations = [r["iteration"] for r in _log(tmp_path / "crashed")]
    assert iterations == sorted(set(iterations))
    assert _losses(tmp_path / "crashed") == _losses(tmp_path / "reference")


def test_no_temporary_files_left(tmp_path):
    train(SMALL, tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([LOG_FILE, MODEL_FILE, "model.json", STATE_FILE])


def test_resume_with_other_config_rejected(tmp_path):
    train(SMALL, tmp_path, should_stop=lambda: True)
    with pytest.raises(TrainingError, match="differs"):
        train(dataclasses.replace(SMALL, learning_rate=0.01), tmp_path)


def test_model_metadata(tmp_path):
    result = train(SMALL, tmp_path)
    weights, metadata = load_checkpoint(result.model_path, task="add2")
    assert metadata["iterations"] == 60
    assert TrainConfig.from_json(metadata["training_config"]) == SMALL
    assert metadata["covering_pairs"] == [[0, 4]]
    assert metadata["dataset_pairs"] == 21
    assert len(metadata["dataset_hash"]) == 64
    assert metadata["final_loss"] == pytest.approx(result.final_loss)
    assert weights.hidden_dim == 11


@pytest.mark.parametrize("path", ["scan", "loop"])
def test_torch_paths_follow_fused(tmp_path, path):
    config = dataclasses.replace(SMALL, iterations=20, dtype="float64")
    fused = train(config, tmp_path / "fused")
    other = train(dataclasses.replace(config, path=path), tmp_path / path)
    assert np.allclose(_losses(tmp_path / "fused"), _losses(tmp_path / path), rtol=1e-8)
    assert other.final_loss == pytest.approx(fused.final_loss, rel=1e-8)


def test_covering_pairs_complete_add2():
    pairs, extra = training_pairs(SMALL)
    assert not coverage("add2", pairs).complete
    assert coverage("add2", pairs + extra).complete
    assert len(extra) == 1


def test_no_covering_pairs_when_ds_covers():
    config = TrainConfig(task="add10", selection_seed=3)
    pairs, extra = training_pairs(config)
    assert coverage("add10", pairs).complete
    assert extra == []


def test_cosine_schedule_endpoints():
    config = TrainConfig(iterations=100, learning_rate=0.002)
    assert cosine_learning_rate(config, 0) == 0.002
    assert cosine_learning_rate(config, 50) == pytest.approx(0.001)
    assert cosine_learning_rate(config, 100) == pytest.approx(0.0, abs=1e-18)
    assert all(
        cosine_learning_rate(config, i + 1) < cosine_learning_rate(config, i) for i in range(100)
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("task", "sub2", "task"),
        ("iterations", 0, "iterations"),
        ("learning_rate", math.nan, "learning_rate"),
        ("dtype", "float16", "dtype"),
        ("path", "magic", "path"),
        ("hidden_dim", 0, "hidden_dim"),
    ],
)
def test_invalid_config_rejected(tmp_path, field, value, message):
    with pytest.raises(TrainingError, match=message):
        train(dataclasses.replace(SMALL, **{field: value}), tmp_path)


def test_fused_needs_cpu(tmp_path):
    with pytest.raises(TrainingError, match="CPU"):
        train(dataclasses.replace(SMALL, path="fused", device="cuda"), tmp_path)


def test_probe_results_logged(tmp_path):
    calls = []

    def probe(weights, task, digits):
        calls.append((task, digits))
        return digits < 10

    config = dataclasses.replace(SMALL, iterations=20, probe_every=10, probe_digits=(4, 16))
    train(config, tmp_path, probe=probe)
    probes = [r for r in _log(tmp_path) if "rlg_probe" in r]
    assert [r["iteration"] for r in probes] == [10, 20]
    assert probes[0]["rlg_probe"] == {"4": True, "16": False}
    assert calls == [("add2", 4), ("add2", 16)] * 2


def test_config_json_round_trip():
    config = TrainConfig(task="add10", probe_digits=(3, 5), hidden_dim=7)
    assert TrainConfig.from_json(json.loads(json.dumps(config.to_json()))) == config
    with pytest.raises(TrainingError, match="unknown"):
        TrainConfig.from_json({"task": "add2", "bogus": 1})


def test_binary_penalty_vanishes_on_zero_one_entries():
    import torch

    from dfst import get_expert, oracle_weights
    from dfst.training.loop import binary_penalty

    zero_one = torch.from_numpy(oracle_weights(get_expert("add2")).A.astype(np.float64))
    halves = torch.full((2, 3, 3), 0.5, dtype=torch.float64)

    assert float(binary_penalty(zero_one)) == 0.0
    assert float(binary_penalty(halves)) == pytest.approx(18 * 0.0625)


@pytest.mark.parametrize(("penalty_weight", "l2_weight"), [(0.3, 0.0), (0.0, 0.2), (0.3, 0.2)])
def test_penalty_gradients_fused_match_autograd(penalty_weight, l2_weight):
    import torch

    from dfst import get_expert
    from dfst.data import build_dataset
    from dfst.training.loop import _gradient_step
    from dfst.training.model import DFST, pad_traces

    batch = pad_traces(build_dataset("add2", [(5, 3), (6, 1), (7, 7)]))
    gradients = {}
    for path in ("fused", "loop"):
        model = DFST(get_expert("add2").num_symbols, 11, seed=1, dtype=torch.float64)
        with torch.no_grad():
            noise = torch.randn(model.A.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
            model.A.add_(0.1 * noise)
        _gradient_step(model, batch, path, penalty_weight=penalty_weight, l2_weight=l2_weight)
        gradients[path] = model.A.grad.numpy().copy()

    np.testing.assert_allclose(gradients["fused"], gradients["loop"], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
@pytest.mark.parametrize("name", ["binary_penalty", "transition_l2"])
def test_invalid_penalty_weight_rejected(name, weight):
    with pytest.raises(TrainingError, match=f"{name} must be a non-negative number"):
        TrainConfig(task="add2", **{name: weight}).validate()
