"""Resumable training state in one safetensors file, written atomically.

The file holds the parameters and Adam's moment estimates as tensors, and in
its safetensors header a JSON document with the iteration, Adam's step count,
the batch sampler's RNG state, the cumulative wall time and the training
config.  Everything needed to continue a run bit-identically is in that one
file, so a rename makes each save atomic.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import save as save_safetensors_bytes

from dfst.checkpoint import CheckpointError, load_tensors, write_atomic

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.safetensors"
PARAMETER_NAMES = ("A", "B", "C", "h0")
_HEADER_KEY = "dfst_training_state"


def save_training_state(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Adam, document: dict[str, Any]
) -> None:
    """Write parameters, Adam moments and ``document`` (JSON-serialisable) to ``path``."""
    tensors = {}
    adam_steps = []
    for name in PARAMETER_NAMES:
        parameter = getattr(model, name)
        tensors[f"param.{name}"] = parameter.detach().cpu().numpy().copy()
        state = optimizer.state.get(parameter, {})
        if state:
            tensors[f"exp_avg.{name}"] = state["exp_avg"].cpu().numpy().copy()
            tensors[f"exp_avg_sq.{name}"] = state["exp_avg_sq"].cpu().numpy().copy()
            adam_steps.append(int(state["step"].item()))
    document = dict(document, adam_step=adam_steps[0] if adam_steps else 0)
    header = {_HEADER_KEY: json.dumps(document, sort_keys=True)}
    write_atomic(path, save_safetensors_bytes(tensors, metadata=header))


def load_training_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Adam) -> dict[str, Any]:
    """Restore parameters and Adam state from ``path`` into ``model`` and ``optimizer``; return the document."""
    from safetensors import safe_open

    tensors = load_tensors(path)
    with safe_open(str(path), framework="numpy") as file:
        header = file.metadata() or {}
    if _HEADER_KEY not in header:
        raise CheckpointError(f"training state {path} has no {_HEADER_KEY!r} header entry")
    document = json.loads(header[_HEADER_KEY])

    with torch.no_grad():
        for name in PARAMETER_NAMES:
            key = f"param.{name}"
            parameter = getattr(model, name)
            if key not in tensors or tensors[key].shape != tuple(parameter.shape):
                raise CheckpointError(f"training state {path}: tensor {key} is missing or has the wrong shape")
            parameter.copy_(torch.from_numpy(tensors[key]))
    step = document["adam_step"]
    for name in PARAMETER_NAMES:
        parameter = getattr(model, name)
        if f"exp_avg.{name}" not in tensors:
            continue
        optimizer.state[parameter] = {
            "step": torch.tensor(float(step), dtype=torch.float32),
            "exp_avg": torch.from_numpy(tensors[f"exp_avg.{name}"]).to(parameter.device).clone(),
            "exp_avg_sq": torch.from_numpy(tensors[f"exp_avg_sq.{name}"]).to(parameter.device).clone(),
        }
    return document


def rng_state_to_json(rng: np.random.Generator) -> dict[str, Any]:
    """Return the PCG64 state of ``rng`` as a JSON-compatible dict."""
    return rng.bit_generator.state


def rng_from_json(state: dict[str, Any]) -> np.random.Generator:
    """Rebuild a generator from :func:`rng_state_to_json` output."""
    bit_generator = np.random.PCG64()
    bit_generator.state = state
    return np.random.Generator(bit_generator)
