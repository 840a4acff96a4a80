"""Automaton extraction from trained DFSTs."""

from __future__ import annotations

import numpy as np
import pytest

from dfst.checkpoint import load_checkpoint
from dfst.data import build_dataset
from dfst.evaluation import evaluate
from dfst.experts import get_expert
from dfst.oracle import oracle_weights
from dfst.rollout import run_rollout
from dfst.training import TrainConfig, train
from dfst.training.extract import (
    COARSE_RADII,
    MAX_CLUSTERS,
    _cluster,
    agrees_on_traces,
    extract_automaton,
    extract_run,
    leader_clusters,
)
from dfst.training.loop import training_pairs
from dfst.weights import DFSTWeights


def _traces(task: str):
    pairs, extra = training_pairs(TrainConfig(task=task, selection_seed=3))
    return build_dataset(task, pairs + extra)


def _scrambled(weights: DFSTWeights, seed: int, noise: float) -> DFSTWeights:
    """Return an equivalent DFST in a random basis, plus small noise on A: no longer one-hot."""
    rng = np.random.default_rng(seed)
    d = weights.hidden_dim
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0] * 3
    inverse = np.linalg.inv(basis)
    A = np.einsum("ij,kjl,lm->kim", basis, weights.A, inverse) + noise * rng.normal(size=weights.A.shape)
    return DFSTWeights(A, weights.B @ inverse, weights.C @ inverse, basis @ weights.h0)


@pytest.mark.parametrize("task", ["add2", "add10"])
def test_oracle_extraction_is_exact(task):
    expert = get_expert(task)
    traces = _traces(task)
    extraction = extract_automaton(oracle_weights(expert), traces)
    assert extraction.num_states <= expert.num_states
    assert agrees_on_traces(oracle_weights(expert), extraction.weights, traces) == 0
    report = evaluate(extraction.weights, task, 40, workers=1)
    assert report.verdicts == {"plg": True, "rlg": True}


def test_scrambled_noisy_oracle_extraction_is_exact():
    task = "add10"
    expert = get_expert(task)
    traces = _traces(task)
    scrambled = _scrambled(oracle_weights(expert, dtype=np.float64), seed=0, noise=1e-4)
    extraction = extract_automaton(scrambled, traces)
    assert agrees_on_traces(scrambled, extraction.weights, traces) == 0
    assert extraction.max_spread > 0
    report = evaluate(extraction.weights, task, 60, workers=1)
    assert report.verdicts == {"plg": True, "rlg": True}


def test_extracted_weights_are_one_hot():
    traces = _traces("add2")
    weights = extract_automaton(oracle_weights(get_expert("add2")), traces).weights
    for tensor in (weights.A, weights.B, weights.C):
        assert set(np.unique(tensor)) <= {0.0, 1.0}
        assert np.all(tensor.sum(axis=1) <= 1)
    assert weights.h0.sum() == 1


def test_leader_clusters_radius():
    points = np.array([[0.0, 0.0], [0.05, 0.0], [1.0, 0.0], [1.0, 0.04], [0.0, 0.5]])
    labels, leaders = leader_clusters(points, 0.1)
    assert labels.tolist() == [0, 0, 1, 1, 2]
    assert leaders.shape == (3, 2)


def test_leader_clusters_stop_past_limit():
    points = np.arange(20, dtype=np.float64).reshape(10, 2)
    labels, leaders = leader_clusters(points, 0.1, 3)
    assert len(leaders) == 4
    assert labels[:4].tolist() == [0, 1, 2, 3]
    assert (labels[4:] == -1).all()


def test_spread_states_take_coarse_radius():
    # Three states whose hidden vectors spread over about 3% of their norm.  The first radius of RELATIVE_RADII
    # gives more than MAX_CLUSTERS clusters, and the coarsest of COARSE_RADII separates the states.
    rng = np.random.default_rng(0)
    states = np.arange(3 * MAX_CLUSTERS) % 3
    hidden = 4 * np.eye(20)[states] + rng.normal(0, 0.03, size=(len(states), 20))
    observed = np.zeros(len(states), dtype=np.int64)
    successor = np.append(np.arange(1, len(states)), -1)
    moved = np.zeros(len(states), dtype=np.int64)
    scale = float(np.median(np.linalg.norm(hidden, axis=1)))
    labels, num_clusters, _, _, radius = _cluster(hidden, observed, successor, states, moved, scale)
    assert num_clusters == 3
    assert radius == COARSE_RADII[0] * scale
    assert len(set(zip(labels.tolist(), states.tolist(), strict=True))) == 3


@pytest.mark.slow
def test_trained_add2_extracts_exact_automaton(tmp_path):
    """End to end: train add2 as shipped, extract, and check LG at 500 digits."""
    config = TrainConfig(task="add2", iterations=100_000, checkpoint_every=10_000, log_every=1_000)
    result = train(config, tmp_path)
    path, extraction = extract_run(tmp_path)
    weights, metadata = load_checkpoint(path, task="add2")
    assert metadata["variant"] == "trained+extracted"
    assert metadata["extraction"]["differences_on_training_steps"] == 0
    assert result.final_loss < 1e-5
    assert evaluate(weights, "add2", 500, workers=1).verdicts == {"plg": True, "rlg": True}
    assert run_rollout(weights, "add2", 2**300 - 1, 1).outcome == "correct"
    assert TrainConfig.from_json(metadata["training_config"]) == config
