"""The training loop: config, data, Adam with cosine annealing, checkpoints and logs.

``train(config, out_dir)`` writes into ``out_dir``:

- ``training_state.safetensors``: the resumable state, rewritten atomically every
  ``checkpoint_every`` iterations, on a stop request and at the end;
- ``train.jsonl``: one JSON object per logged iteration (loss, learning rate,
  wall time) and per LG probe;
- ``model.safetensors`` + ``model.json``: the final weights and their metadata.

Calling ``train`` again on the same folder with the same config resumes from
the saved state and continues bit-identically to an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dfst.checkpoint import save_checkpoint, write_atomic
from dfst.data import DEFAULT_SELECTION, SelectionConfig, build_dataset, coverage, dataset_hash, select_pairs
from dfst.experts import TASKS, get_expert
from dfst.training.fused import loss_and_gradients
from dfst.training.model import DFST, TraceBatch, batch_loss, pad_traces, step_loop_hidden
from dfst.training.probes import rlg_probe
from dfst.training.scan import scan_hidden
from dfst.training.state import STATE_FILE, load_training_state, rng_from_json, rng_state_to_json, save_training_state

logger = logging.getLogger(__name__)

LOG_FILE = "train.jsonl"
MODEL_FILE = "model.safetensors"
PATHS = ("auto", "fused", "scan", "loop")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


class TrainingError(ValueError):
    """A training config is invalid or a saved state does not match it."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run; saved in every checkpoint."""

    task: str = "add10"  # one of dfst.experts.TASKS
    iterations: int = 20_000  # Adam steps; the cosine schedule reaches 0 at the last one
    batch_size: int = 32  # traces per step, drawn uniformly with replacement
    learning_rate: float = 1e-3  # Adam's initial learning rate
    dtype: str = "float32"  # "float32" or "float64" parameters and arithmetic
    seed: int = 0  # seeds the initial h0 and the batch sampler
    hidden_dim: int | None = None  # d; None means the expert's state count
    selection_exhaustive_digits: int | None = None  # DS's k; None takes DEFAULT_SELECTION[task]
    selection_digits: int | None = None  # DS's n; None takes DEFAULT_SELECTION[task]
    selection_samples: int | None = None  # DS's N; None takes DEFAULT_SELECTION[task]
    selection_seed: int = 0  # seed of DS's random pairs
    add_covering_pairs: bool = True  # append the pairs needed to cover transitions DS misses
    device: str = "cpu"  # torch device; "cpu" or "cuda[:i]"
    path: str = "auto"  # "fused" (numba, CPU), "scan" (parallel prefix scan), "loop" (torch step loop); auto picks
    checkpoint_every: int = 1_000  # iterations between saved training states
    log_every: int = 100  # iterations between loss log lines
    probe_every: int = 0  # iterations between RLG probes; 0 disables them
    probe_digits: tuple[int, ...] = (8, 16, 32)  # operand lengths of the RLG probes
    # Weight of the penalty sum(a² (1 - a)²) over the entries a of A, which is zero exactly when every
    # entry is 0 or 1, as in a DFST in automaton form; 0 disables it.  The logged loss excludes it.
    binary_penalty: float = 0.0
    # Weight λ of the L2 penalty λ·sum(a²) over the entries a of A.  It pulls the directions of the
    # hidden space that the traces leave unconstrained towards 0, so deviations there shrink instead of
    # persisting along long loops; 0 disables it.  The logged loss excludes it.
    transition_l2: float = 0.0

    def validate(self) -> None:
        """Raise TrainingError on invalid values."""
        if self.task not in TASKS:
            raise TrainingError(f"task {self.task!r} is not one of {', '.join(TASKS)}")
        if self.iterations < 1 or self.batch_size < 1:
            raise TrainingError(f"iterations and batch_size must be ≥ 1, got {self.iterations} and {self.batch_size}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise TrainingError(f"learning_rate must be a positive number, got {self.learning_rate}")
        if self.dtype not in DTYPES:
            raise TrainingError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.path not in PATHS:
            raise TrainingError(f"path {self.path!r} is not one of {', '.join(PATHS)}")
        if self.path == "fused" and not self.device.startswith("cpu"):
            raise TrainingError(f"the fused path runs on the CPU only; device is {self.device!r}")
        if self.hidden_dim is not None and self.hidden_dim < 1:
            raise TrainingError(f"hidden_dim must be ≥ 1 or None, got {self.hidden_dim}")
        for name in ("binary_penalty", "transition_l2"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise TrainingError(f"{name} must be a non-negative number, got {value}")
        if self.checkpoint_every < 1 or self.log_every < 1 or self.probe_every < 0:
            raise TrainingError("checkpoint_every and log_every must be ≥ 1 and probe_every ≥ 0")

    @property
    def resolved_path(self) -> str:
        """The training path used: fused numba on the CPU, the parallel scan elsewhere."""
        if self.path != "auto":
            return self.path
        # NOTE: the scan path is tested on the CPU only; no GPU was available to run device="cuda".
        return "fused" if self.device.startswith("cpu") else "scan"

    def selection(self) -> SelectionConfig:
        default = DEFAULT_SELECTION[self.task]
        return SelectionConfig(
            exhaustive_digits=default.exhaustive_digits
            if self.selection_exhaustive_digits is None
            else self.selection_exhaustive_digits,
            digits=default.digits if self.selection_digits is None else self.selection_digits,
            samples=default.samples if self.selection_samples is None else self.selection_samples,
            seed=self.selection_seed,
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> TrainConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(document) - fields
        if unknown:
            raise TrainingError(f"unknown TrainConfig fields {sorted(unknown)}; known fields are {sorted(fields)}")
        values = dict(document)
        if "probe_digits" in values:
            values["probe_digits"] = tuple(values["probe_digits"])
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """Outcome of one ``train`` call."""

    out_dir: Path  # folder holding the state, log and model files
    iterations_done: int  # iterations completed so far (all calls together)
    completed: bool  # True when every configured iteration ran; False after a stop request
    final_loss: float  # training-set loss of the current weights (mean over every trace's valid steps)
    wall_time_s: float  # training wall time, summed over resumed calls
    model_path: Path | None  # model.safetensors, written when the run completed
    dataset_pairs: int  # number of training pairs


def training_pairs(config: TrainConfig) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Return (DS pairs, extra covering pairs) for a config.

    The extra pairs are those of ``select_covering_pairs`` that add a reachable
    transition DS misses, taken greedily in that function's order.
    """
    from dfst.data import select_covering_pairs, transitions_used

    expert = get_expert(config.task)
    pairs = select_pairs(config.task, config.selection())
    extra: list[tuple[int, int]] = []
    if config.add_covering_pairs:
        report = coverage(config.task, pairs)
        used = report.used.copy()
        if not report.complete:
            for pair in select_covering_pairs(config.task):
                gain = transitions_used(expert, [pair]) & ~used & report.reachable
                if gain.any() and pair not in pairs:
                    extra.append(pair)
                    used |= gain
    return pairs, extra


def full_loss(model: DFST, batch: TraceBatch) -> float:
    """Return the loss over every trace of ``batch`` (fused path, float64 accumulation)."""
    arrays = [getattr(model, name).detach().cpu().numpy() for name in ("A", "B", "C", "h0")]
    return float(loss_and_gradients(*arrays, batch.observed, batch.written, batch.motions, batch.lengths)[0])


def _select(data: TraceBatch, indices: np.ndarray) -> TraceBatch:
    lengths = data.lengths[indices]
    steps = int(lengths.max())
    return TraceBatch(
        np.ascontiguousarray(data.observed[indices, :steps]),
        np.ascontiguousarray(data.written[indices, :steps]),
        np.ascontiguousarray(data.motions[indices, :steps]),
        np.ascontiguousarray(lengths),
    )


def binary_penalty(A: torch.Tensor) -> torch.Tensor:
    """Return sum(a² (1 - a)²) over the entries of A: zero exactly when every entry is 0 or 1."""
    return (A.square() * (1 - A).square()).sum()


def _gradient_step(model: DFST, batch: TraceBatch, path: str, penalty_weight: float = 0.0,
                   l2_weight: float = 0.0) -> float:
    """Set ``.grad`` on every parameter for ``batch`` and return the batch loss, without the penalties.

    ``penalty_weight`` weighs :func:`binary_penalty` and ``l2_weight`` the L2 penalty sum(a²), both on A.
    """
    if path == "fused":
        arrays = [getattr(model, name).detach().numpy() for name in ("A", "B", "C", "h0")]
        loss, *gradients = loss_and_gradients(*arrays, batch.observed, batch.written, batch.motions, batch.lengths)
        for name, gradient in zip(("A", "B", "C", "h0"), gradients, strict=True):
            getattr(model, name).grad = torch.from_numpy(gradient)
        A = model.A.detach()
        if penalty_weight:
            # d/da of a² (1 - a)² is 2a (1 - a)(1 - 2a)
            model.A.grad += penalty_weight * 2 * A * (1 - A) * (1 - 2 * A)
        if l2_weight:
            model.A.grad += l2_weight * 2 * A
        return float(loss)
    model.zero_grad(set_to_none=True)
    loss = batch_loss(model, batch, scan_hidden if path == "scan" else step_loop_hidden)
    objective = loss
    if penalty_weight:
        objective = objective + penalty_weight * binary_penalty(model.A)
    if l2_weight:
        objective = objective + l2_weight * model.A.square().sum()
    objective.backward()
    return float(loss.detach())


def cosine_learning_rate(config: TrainConfig, iteration: int) -> float:
    """Return the learning rate of 0-based ``iteration``: cosine from the initial rate to 0, no warm-up."""
    return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * iteration / config.iterations))


def _append_log(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as file:
        file.write(json.dumps(record) + "\n")


def _truncate_log(path: Path, iteration: int) -> None:
    """Drop log records after ``iteration``: work after the last checkpoint is redone on resume."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["iteration"] <= iteration]
    write_atomic(path, "".join(line + "\n" for line in kept).encode())


def train(
    config: TrainConfig,
    out_dir: str | Path,
    progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    probe: Callable[[Any, str, int], bool] | None = None,
) -> TrainResult:
    """Train a DFST by next-action prediction on expert traces, resuming from ``out_dir`` if it contains a saved state.

    ``progress`` receives each log record; ``should_stop`` is polled every
    iteration, and a true result saves the state and returns early.
    ``probe(weights, task, digits) -> bool`` overrides the RLG probe, which
    otherwise uses :func:`dfst.training.probes.rlg_probe`.
    """
    config.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    probe = probe or rlg_probe
    path = config.resolved_path
    torch_dtype = DTYPES[config.dtype]
    expert = get_expert(config.task)

    # data: DS plus covering pairs, padded once
    pairs, extra = training_pairs(config)
    traces = build_dataset(config.task, pairs + extra)
    data = pad_traces(traces)
    data_hash = dataset_hash(traces)
    logger.info(
        "task %s: %d DS pairs + %d covering pairs %s, %d steps in all, path %s",
        config.task, len(pairs), len(extra), extra, int(data.lengths.sum()), path,
    )

    # model, optimizer, sampler; restored from the saved state if there is one
    model = DFST(expert.num_symbols, config.hidden_dim or expert.num_states, seed=config.seed, dtype=torch_dtype)
    model.to(config.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, foreach=False)
    rng = np.random.Generator(np.random.PCG64(config.seed))
    iteration = 0
    wall_before = 0.0
    state_path = out_dir / STATE_FILE
    log_path = out_dir / LOG_FILE
    if state_path.exists():
        document = load_training_state(state_path, model, optimizer)
        saved = TrainConfig.from_json(document["config"])
        if saved != config:
            raise TrainingError(
                f"{state_path} was saved by a run with config {saved}, which differs from {config}; "
                "use a new output folder or the saved config"
            )
        iteration = document["iteration"]
        wall_before = document["wall_time_s"]
        rng = rng_from_json(document["rng"])
        _truncate_log(log_path, iteration)
        logger.info("resumed %s at iteration %d", out_dir, iteration)
    elif log_path.exists():
        log_path.unlink()

    def save_state() -> None:
        document = {
            "config": config.to_json(),
            "iteration": iteration,
            "rng": rng_state_to_json(rng),
            "wall_time_s": wall_before + time.perf_counter() - started,
        }
        save_training_state(state_path, model, optimizer, document)

    completed = True
    while iteration < config.iterations:
        if should_stop is not None and should_stop():
            completed = False
            break
        for group in optimizer.param_groups:
            group["lr"] = cosine_learning_rate(config, iteration)
        indices = rng.integers(0, len(traces), size=config.batch_size)
        loss = _gradient_step(model, _select(data, indices), path, config.binary_penalty, config.transition_l2)
        optimizer.step()
        iteration += 1

        if iteration % config.log_every == 0 or iteration == config.iterations:
            record = {
                "iteration": iteration,
                "loss": loss,
                "lr": cosine_learning_rate(config, iteration - 1),
                "wall_time_s": round(wall_before + time.perf_counter() - started, 3),
            }
            if not math.isfinite(loss):
                logger.error("loss became %s at iteration %d", loss, iteration)
            _append_log(log_path, record)
            if progress is not None:
                progress(record)
        if config.probe_every and (iteration % config.probe_every == 0 or iteration == config.iterations):
            weights = model.to_weights()
            results = {str(n): bool(probe(weights, config.task, n)) for n in config.probe_digits}
            _append_log(log_path, {"iteration": iteration, "rlg_probe": results})
        if iteration % config.checkpoint_every == 0:
            save_state()
    save_state()

    final = full_loss(model, data)
    wall_time = wall_before + time.perf_counter() - started
    model_path = None
    if completed:
        selection = config.selection()
        metadata = {
            "task": config.task,
            "variant": "trained",
            "training_config": config.to_json(),
            "data_selection": dataclasses.asdict(selection),
            "covering_pairs": [list(pair) for pair in extra],
            "dataset_pairs": len(traces),
            "dataset_hash": data_hash,
            "seed": config.seed,
            "iterations": iteration,
            "final_loss": final,
            "wall_time_s": round(wall_time, 1),
            "lg": {},
        }
        model_path = save_checkpoint(out_dir / MODEL_FILE, model.to_weights(), metadata)
    logger.info("stopped at iteration %d, training loss %.3g, %.1f s", iteration, final, wall_time)
    return TrainResult(out_dir, iteration, completed, final, wall_time, model_path, len(traces))
