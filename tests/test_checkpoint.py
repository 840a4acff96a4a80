"""Model checkpoints: round trips, metadata, atomic writes and each kind of corruption."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dfst import checkpoint as checkpoint_module
from dfst.checkpoint import MAX_CHECKPOINT_BYTES, CheckpointError, load_checkpoint, metadata_path, save_checkpoint
from dfst.experts import get_expert
from dfst.oracle import oracle_weights
from dfst.weights import DFSTWeights


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "add10.safetensors"
    save_checkpoint(path, oracle_weights(get_expert("add10")), {"task": "add10", "iterations": 5})
    return path


def test_round_trip_keeps_weights_and_metadata(saved):
    weights, metadata = load_checkpoint(saved)
    expert = get_expert("add10")
    assert weights.sha256() == oracle_weights(expert).sha256()
    assert metadata["task"] == "add10"
    assert metadata["iterations"] == 5
    assert metadata["expert_table_hash"] == expert.table_hash
    assert metadata["num_symbols"] == expert.num_symbols
    assert metadata["hidden_dim"] == expert.num_states
    assert metadata["sha256"] == weights.sha256()


def test_float64_round_trip(tmp_path):
    weights = oracle_weights(get_expert("add2"), dtype=np.float64)
    path = save_checkpoint(tmp_path / "m.safetensors", weights, {"task": "add2"})
    loaded, metadata = load_checkpoint(path)
    assert loaded.A.dtype == np.float64
    assert metadata["dtype"] == "float64"


def test_no_temporary_files_left(saved):
    assert sorted(p.name for p in saved.parent.iterdir()) == ["add10.json", "add10.safetensors"]


def test_failed_write_keeps_previous_file(saved, monkeypatch):
    before = saved.read_bytes()

    def failing_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(saved, oracle_weights(get_expert("add10")), {"task": "add10"})
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == ["add10.json", "add10.safetensors"]


def test_save_rejects_unknown_task(tmp_path):
    with pytest.raises(CheckpointError, match="task"):
        save_checkpoint(tmp_path / "m.safetensors", oracle_weights(get_expert("add2")), {"task": "sub2"})


def test_save_rejects_wrong_suffix(tmp_path):
    with pytest.raises(CheckpointError, match=".safetensors"):
        save_checkpoint(tmp_path / "m.pt", oracle_weights(get_expert("add2")), {"task": "add2"})


def test_wrong_task_rejected(saved):
    with pytest.raises(CheckpointError, match="not the requested task 'add2'"):
        load_checkpoint(saved, task="add2")


def test_truncated_file_rejected(saved):
    saved.write_bytes(saved.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(saved)


def test_nan_rejected(tmp_path):
    weights = oracle_weights(get_expert("add2"))
    A = weights.A.copy()
    A[0, 0, 0] = np.nan
    path = tmp_path / "nan.safetensors"
    from safetensors.numpy import save_file

    save_file({"A": A, "B": weights.B, "C": weights.C, "h0": weights.h0}, str(path))
    metadata_path(path).write_text(json.dumps({"task": "add2"}))
    with pytest.raises(CheckpointError, match="non-finite"):
        load_checkpoint(path)


def test_wrong_shape_for_task_rejected(tmp_path):
    # add10 weights (K = 12) labelled as add2 (K = 4)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, oracle_weights(get_expert("add10")), {"task": "add10"})
    document = json.loads(metadata_path(path).read_text())
    document["task"] = "add2"
    metadata_path(path).write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="K=12"):
        load_checkpoint(path)


def test_oversized_file_rejected(tmp_path):
    path = tmp_path / "big.safetensors"
    with path.open("wb") as file:
        file.truncate(MAX_CHECKPOINT_BYTES + 1)
    with pytest.raises(CheckpointError, match="limit"):
        load_checkpoint(path)


def test_missing_metadata_rejected(saved):
    os.remove(metadata_path(saved))
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(saved)


def test_weights_from_other_checkpoint_rejected(saved, tmp_path):
    other = tmp_path / "other.safetensors"
    weights = oracle_weights(get_expert("add10"))
    save_checkpoint(other, DFSTWeights(weights.A * 2, weights.B, weights.C, weights.h0), {"task": "add10"})
    metadata_path(other).write_bytes(metadata_path(saved).read_bytes())
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(other)
