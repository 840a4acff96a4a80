"""Automaton extraction from a trained DFST (state-space quantisation, after Omlin & Giles 1996).

The trained model is run teacher-forced on the training inputs only.  The
hidden vectors it visits are clustered, and each cluster becomes one automaton
state.  The cluster-to-cluster transitions and the write and move decisions
are read off the trained model's own outputs (argmax of B[x]h and C[x]h).
The automaton is then written back as DFST weights in the one-hot form of
Theorem 2.1 of "Exact Learning of Arithmetic with Differentiable Agents"
(arXiv 2511.22751).  Such weights keep an exactly one-hot hidden state, so they
cannot drift over long sweeps.

Nothing here reads the expert's states: the traces supply only the observed
symbols, and the clustering radius is chosen as the coarsest one whose
automaton is deterministic (each (cluster, symbol) pair has one successor
cluster, one write and one move).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numba
import numpy as np

from dfst.grid import MOTIONS
from dfst.runner import Trace
from dfst.training.model import pad_traces
from dfst.weights import DFSTWeights

logger = logging.getLogger(__name__)

# Clustering radii tried in turn, relative to the median hidden-vector norm: 1e-2 down to 1e-6.
RELATIVE_RADII = tuple(10.0 ** (-e / 2) for e in range(4, 13))
# Coarser radii, tried in turn when the first of RELATIVE_RADII already gives more than MAX_CLUSTERS
# clusters, because finer radii only give more.  Trained mult10 models spread each state over a few
# percent of the norm, so they need one of these.
COARSE_RADII = (10.0**-0.5, 10.0**-1, 10.0**-1.5)


# Most clusters accepted before greedy merging; more means the hidden vectors do not form a finite set.
MAX_CLUSTERS = 1000


class ExtractionError(RuntimeError):
    """No clustering radius yields a deterministic automaton."""


@dataclasses.dataclass(frozen=True)
class Extraction:
    """An automaton read off a trained DFST, and its DFST weights."""

    weights: DFSTWeights  # one-hot DFST with d = number of clusters
    num_states: int  # clusters (automaton states)
    radius: float  # absolute clustering radius used
    centroids: np.ndarray  # (num_states, d_trained) mean hidden vector per cluster
    transitions_seen: int  # (state, symbol) pairs met on the training inputs
    max_spread: float  # largest distance of a visited hidden vector from its centroid


def teacher_forced_states(weights: DFSTWeights, traces: list[Trace]):
    """Return per-step arrays (hidden (S, d), observed (S,), successor index (S,), write (S,), move (S,)).

    ``successor[s]`` is the flat index of the next step of the same trace, or
    -1 for a trace's last step.  Writes and moves are the model's argmax.
    """
    batch = pad_traces(traces)
    A, B, C, h0 = (np.asarray(t, dtype=np.float64) for t in (weights.A, weights.B, weights.C, weights.h0))
    hidden, observed, successor, written, moved = [], [], [], [], []
    offset = 0
    for n, length in enumerate(batch.lengths):
        h = h0.copy()
        for t in range(length):
            x = batch.observed[n, t]
            hidden.append(h)
            observed.append(x)
            written.append(int(np.argmax(B[x] @ h)))
            moved.append(int(np.argmax(C[x] @ h)))
            successor.append(offset + t + 1 if t + 1 < length else -1)
            h = A[x] @ h
        offset += int(length)
    return (np.array(hidden), np.array(observed), np.array(successor), np.array(written), np.array(moved))


@numba.njit(cache=True)
def leader_clusters(points: np.ndarray, radius: float, max_leaders: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Assign each point to the nearest leader within ``radius``, else make it a new leader.

    Returns (labels (S,), leaders (L, d)).  Each point is compared with every
    leader, so with ``max_leaders`` ≥ 0 the scan stops once there are more
    leaders than that.  The labels of the points not reached are then -1.
    """
    count, d = points.shape
    leaders = np.empty_like(points)
    labels = np.full(count, -1, dtype=np.int64)
    num_leaders = 0
    for index in range(count):
        if 0 <= max_leaders < num_leaders:
            break
        nearest = -1
        nearest_distance = np.inf
        for leader in range(num_leaders):
            distance = 0.0
            for j in range(d):
                difference = points[index, j] - leaders[leader, j]
                distance += difference * difference
            if distance < nearest_distance:
                nearest_distance = distance
                nearest = leader
        if nearest >= 0 and nearest_distance <= radius * radius:
            labels[index] = nearest
        else:
            leaders[num_leaders] = points[index]
            labels[index] = num_leaders
            num_leaders += 1
    return labels, leaders[:num_leaders].copy()


class _Partition:
    """Union-find over clusters, with the per-cluster observations it folds."""

    def __init__(self, labels, observed, successor, written, moved, num_clusters):
        self.parent = np.arange(num_clusters)
        next_label = np.where(successor >= 0, labels[np.maximum(successor, 0)], -1)
        self.successors: dict[tuple[int, int], set[int]] = {}
        self.outputs: dict[tuple[int, int], set[tuple[int, int]]] = {}
        for cluster, symbol, target, write, move in zip(
            labels.tolist(), observed.tolist(), next_label.tolist(), written.tolist(), moved.tolist(), strict=True
        ):
            self.outputs.setdefault((cluster, symbol), set()).add((write, move))
            if target >= 0:
                self.successors.setdefault((cluster, symbol), set()).add(target)

    def find(self, parent: np.ndarray, x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def fold(self, parent: np.ndarray) -> np.ndarray | None:
        """Merge successor classes until every (class, symbol) has one successor; None on an output conflict."""
        parent = parent.copy()
        while True:
            outputs: dict[tuple[int, int], set[tuple[int, int]]] = {}
            for (cluster, symbol), values in self.outputs.items():
                outputs.setdefault((self.find(parent, cluster), symbol), set()).update(values)
            if any(len(values) > 1 for values in outputs.values()):
                return None
            successors: dict[tuple[int, int], set[int]] = {}
            for (cluster, symbol), targets in self.successors.items():
                roots = {self.find(parent, t) for t in targets}
                successors.setdefault((self.find(parent, cluster), symbol), set()).update(roots)
            merged = False
            for roots in successors.values():
                if len(roots) > 1:
                    first, *rest = sorted(roots)
                    for other in rest:
                        parent[self.find(parent, other)] = self.find(parent, first)
                    merged = True
            if not merged:
                return parent

    def class_outputs(self, parent: np.ndarray) -> dict[int, dict[int, tuple[int, int]]]:
        """Return, for each class root of a folded ``parent``, its (write, move) output per seen symbol."""
        roots = {self.find(parent, cluster) for cluster in range(len(parent))}
        outputs: dict[int, dict[int, tuple[int, int]]] = {root: {} for root in roots}
        for (cluster, symbol), values in self.outputs.items():
            outputs[self.find(parent, cluster)][symbol] = next(iter(values))
        return outputs

    def merge(self, parent: np.ndarray, a: int, b: int) -> np.ndarray | None:
        trial = parent.copy()
        trial[self.find(trial, b)] = self.find(trial, a)
        return self.fold(trial)


def _quotient(partition: _Partition, parent: np.ndarray, num_symbols: int):
    """Return (class of each cluster, next, write, move tables) of the folded automaton, -1 where unseen."""
    roots = sorted({partition.find(parent, c) for c in range(len(parent))})
    index = {root: i for i, root in enumerate(roots)}
    cluster_class = np.array([index[partition.find(parent, c)] for c in range(len(parent))])
    shape = (len(roots), num_symbols)
    next_table, write_table, move_table = (np.full(shape, -1, dtype=np.int64) for _ in range(3))
    for (cluster, symbol), values in partition.outputs.items():
        (write, move), = values if len(values) == 1 else (next(iter(values)),)
        write_table[cluster_class[cluster], symbol] = write
        move_table[cluster_class[cluster], symbol] = move
    for (cluster, symbol), targets in partition.successors.items():
        next_table[cluster_class[cluster], symbol] = cluster_class[next(iter(targets))]
    return cluster_class, next_table, write_table, move_table


def _cluster(hidden, observed, successor, written, moved, scale):
    """Return (labels, clusters, partition, folded parent, radius) at the first deterministic radius.

    RELATIVE_RADII are tried from coarse to fine.  If the first of them
    already gives more than MAX_CLUSTERS clusters, COARSE_RADII are tried
    instead, also from coarse to fine.
    """
    for radii in (RELATIVE_RADII, COARSE_RADII):
        for relative in radii:
            radius = relative * scale
            labels, leaders = leader_clusters(hidden, radius, MAX_CLUSTERS)
            num_clusters = len(leaders)
            if num_clusters > MAX_CLUSTERS:
                break
            partition = _Partition(labels, observed, successor, written, moved, num_clusters)
            parent = partition.fold(np.arange(num_clusters))
            logger.info("radius %.2e: %d clusters, %s", radius, num_clusters,
                        "deterministic after folding" if parent is not None else "not deterministic")
            if parent is not None:
                return labels, num_clusters, partition, parent, radius
        else:
            raise ExtractionError(
                f"no clustering radius from {radii[0]:.1e} down to {radii[-1]:.1e} x the median norm gives a "
                "deterministic automaton; the model does not act as a finite-state machine on its training inputs"
            )
        if radii is COARSE_RADII or relative != radii[0]:
            break
        logger.info("more than %d clusters at radius %.2e; trying coarser radii", MAX_CLUSTERS, radius)
    raise ExtractionError(
        f"the hidden vectors form more than {MAX_CLUSTERS} clusters at radius {radius:.2e}; "
        "the model does not act as a finite-state machine on its training inputs"
    )


def _conflict(first: dict[int, tuple[int, int]], second: dict[int, tuple[int, int]]) -> bool:
    """Return True if two classes choose different (write, move) outputs on a symbol both have seen."""
    return any(second.get(symbol, output) != output for symbol, output in first.items())


def extract_automaton(weights: DFSTWeights, traces: list[Trace]) -> Extraction:
    """Extract a one-hot DFST from trained ``weights`` using the training ``traces``' inputs.

    First the visited hidden vectors are clustered finely (leader clustering).
    Clusters whose members lead, on one symbol, to different clusters are
    folded together.  Then the closest pairs of states are merged greedily
    whenever the folded result stays deterministic, that is, no state emits
    two different actions on one symbol.
    """
    hidden, observed, successor, written, moved = teacher_forced_states(weights, traces)
    scale = float(np.median(np.linalg.norm(hidden, axis=1)))
    k = weights.num_symbols

    labels, num_clusters, partition, parent, radius = _cluster(
        hidden, observed, successor, written, moved, scale
    )

    # greedy merging of the closest cluster pairs that stay consistent
    cluster_centroids = np.stack([hidden[labels == c].mean(axis=0) for c in range(num_clusters)])
    squared_norms = np.sum(cluster_centroids**2, axis=1)
    gram = cluster_centroids @ cluster_centroids.T
    distances = np.sqrt(np.maximum(squared_norms[:, None] + squared_norms[None, :] - 2 * gram, 0.0))
    first, second = np.triu_indices(num_clusters, 1)
    class_outputs = partition.class_outputs(parent)
    for pair in np.argsort(distances[first, second], kind="stable"):
        a, b = partition.find(parent, int(first[pair])), partition.find(parent, int(second[pair]))
        if a == b or _conflict(class_outputs[a], class_outputs[b]):
            # fold would reject this merge at its first check, so skipping it changes nothing
            continue
        merged = partition.merge(parent, a, b)
        if merged is not None:
            parent = merged
            class_outputs = partition.class_outputs(parent)

    cluster_class, next_table, write_table, move_table = _quotient(partition, parent, k)
    labels = cluster_class[labels]
    num_states = int(labels.max()) + 1
    centroids = np.stack([hidden[labels == c].mean(axis=0) for c in range(num_states)])
    spread = float(np.max(np.linalg.norm(hidden - centroids[labels], axis=1)))
    seen = int((write_table >= 0).sum())

    # unseen (state, symbol) pairs stay zero, as in the oracle construction for undefined transitions
    # write the automaton in the one-hot form of Theorem 2.1
    d = num_states
    one_hot_A = np.zeros((k, d, d), dtype=np.float32)
    one_hot_B = np.zeros((k, k, d), dtype=np.float32)
    one_hot_C = np.zeros((k, len(MOTIONS), d), dtype=np.float32)
    for state in range(d):
        for symbol in range(k):
            if write_table[state, symbol] < 0:
                continue
            if next_table[state, symbol] >= 0:
                one_hot_A[symbol, next_table[state, symbol], state] = 1
            one_hot_B[symbol, write_table[state, symbol], state] = 1
            one_hot_C[symbol, move_table[state, symbol], state] = 1
    h0 = np.zeros(d, dtype=np.float32)
    h0[labels[0]] = 1
    result = DFSTWeights(one_hot_A, one_hot_B, one_hot_C, h0)
    logger.info(
        "extracted %d states from %d clusters at radius %.2e (spread %.2e), %d transitions seen",
        num_states, num_clusters, radius, spread, seen,
    )
    return Extraction(result, num_states, radius, centroids, seen, spread)


def agrees_on_traces(first: DFSTWeights, second: DFSTWeights, traces: list[Trace]) -> int:
    """Return how many steps of the traces' inputs the two models' argmax write or move differ on."""
    _, _, _, write_a, move_a = teacher_forced_states(first, traces)
    _, _, _, write_b, move_b = teacher_forced_states(second, traces)
    return int(np.sum((write_a != write_b) | (move_a != move_b)))


def extract_run(run_dir: str | Path) -> tuple[Path, Extraction]:
    """Extract the automaton of a finished run's ``model.safetensors`` into ``extracted.safetensors``.

    The training inputs are rebuilt from the config saved in the checkpoint.
    Raises ExtractionError if the extracted DFST and the trained one choose a
    different action on any step of those inputs.
    """
    from dfst.checkpoint import load_checkpoint, save_checkpoint
    from dfst.data import build_dataset
    from dfst.training.loop import MODEL_FILE, TrainConfig, training_pairs

    run_dir = Path(run_dir)
    weights, metadata = load_checkpoint(run_dir / MODEL_FILE)
    config = TrainConfig.from_json(metadata["training_config"])
    pairs, extra = training_pairs(config)
    traces = build_dataset(config.task, pairs + extra)
    extraction = extract_automaton(weights, traces)
    differences = agrees_on_traces(weights, extraction.weights, traces)
    if differences:
        raise ExtractionError(
            f"the extracted automaton differs from the trained model on {differences} training steps"
        )
    document = dict(
        metadata,
        variant="trained+extracted",
        trained_sha256=metadata["sha256"],
        extraction={
            "states": extraction.num_states,
            "radius": extraction.radius,
            "max_spread": extraction.max_spread,
            "transitions_seen": extraction.transitions_seen,
            "differences_on_training_steps": differences,
        },
        lg={},
    )
    path = save_checkpoint(run_dir / "extracted.safetensors", extraction.weights, document)
    return path, extraction
