"""Model checkpoints: A, B, C and h0 in safetensors plus a JSON metadata document.

A checkpoint ``NAME.safetensors`` has a sidecar ``NAME.json`` (the same path
with the suffix ``.json``).  The metadata records the task, the expert's table
hash, K, d, the weights' sha256 and whatever the trainer adds (training config,
data selection, dataset hash, seed, iterations, final loss, measured LG).

Loading never unpickles: the tensors are read with safetensors and the
metadata with ``json``.  Every problem raises :class:`CheckpointError` naming
the file and what is wrong.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors_bytes
from safetensors.numpy import save as save_safetensors_bytes

from dfst.experts import TASKS, get_expert
from dfst.weights import DFSTWeights, WeightsError

logger = logging.getLogger(__name__)

# Largest checkpoint file accepted, in bytes.  The largest paper model (mult10,
# 162,108 parameters) takes 1.3 MB in float64, so 64 MiB leaves ample room.
MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024
# Largest metadata document accepted, in bytes.
MAX_METADATA_BYTES = 4 * 1024 * 1024
TENSOR_NAMES = ("A", "B", "C", "h0")
ALLOWED_DTYPES = (np.float32, np.float64)


class CheckpointError(ValueError):
    """A checkpoint file is missing, malformed, inconsistent or for another task."""


def metadata_path(path: str | os.PathLike) -> Path:
    """Return the JSON sidecar path of a checkpoint path."""
    return Path(path).with_suffix(".json")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file in the target folder, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | os.PathLike, weights: DFSTWeights, metadata: dict[str, Any]) -> Path:
    """Write weights to ``path`` (safetensors) and metadata to its ``.json`` sidecar, each atomically.

    ``metadata`` must contain ``task``; ``sha256``, ``num_symbols``,
    ``hidden_dim`` and ``expert_table_hash`` are filled in.  Returns the
    weights path.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"checkpoint path {path} must end in .safetensors")
    task = metadata.get("task")
    if task not in TASKS:
        raise CheckpointError(f"metadata task {task!r} is not one of {', '.join(TASKS)}")
    weights.validate(get_expert(task).num_symbols)
    document = dict(metadata)
    document.update(
        sha256=weights.sha256(),
        num_symbols=weights.num_symbols,
        hidden_dim=weights.hidden_dim,
        expert_table_hash=get_expert(task).table_hash,
        dtype=str(weights.A.dtype),
    )
    tensors = {name: np.ascontiguousarray(getattr(weights, name)) for name in TENSOR_NAMES}
    write_atomic(path, save_safetensors_bytes(tensors))
    write_atomic(metadata_path(path), (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())
    logger.info("saved checkpoint %s (task %s, sha256 %s)", path, task, document["sha256"][:12])
    return path


def _read_limited(path: Path, limit: int, description: str) -> bytes:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CheckpointError(f"{description} {path} not found") from None
    except OSError as error:
        raise CheckpointError(f"cannot read the {description} {path}: {error.strerror}") from None
    if not path.is_file():
        raise CheckpointError(f"{description} {path} is not a regular file")
    if size > limit:
        raise CheckpointError(f"{description} {path} has {size} bytes, above the {limit}-byte limit")
    try:
        return path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"{description} {path} could not be read: {error}") from None


def load_tensors(path: Path) -> dict[str, np.ndarray]:
    """Read the tensors of a safetensors file, raising CheckpointError if it is malformed."""
    data = _read_limited(path, MAX_CHECKPOINT_BYTES, "checkpoint file")
    try:
        return load_safetensors_bytes(data)
    except (SafetensorError, ValueError, OverflowError) as error:
        raise CheckpointError(f"checkpoint file {path} is truncated or not a safetensors file: {error}") from None


def load_metadata(path: Path) -> dict[str, Any]:
    """Read a checkpoint's JSON sidecar."""
    json_path = metadata_path(path)
    data = _read_limited(json_path, MAX_METADATA_BYTES, "metadata file")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"metadata file {json_path} is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise CheckpointError(f"metadata file {json_path} must hold a JSON object, got {type(document).__name__}")
    return document


def load_checkpoint(path: str | os.PathLike, task: str | None = None) -> tuple[DFSTWeights, dict[str, Any]]:
    """Load and validate a checkpoint; if ``task`` is given, the checkpoint must be for that task."""
    path = Path(path)
    tensors = load_tensors(path)
    names = sorted(tensors)
    if names != sorted(TENSOR_NAMES):
        raise CheckpointError(f"checkpoint {path} contains tensors {names}, expected exactly {list(TENSOR_NAMES)}")
    for name in TENSOR_NAMES:
        dtype = tensors[name].dtype
        if dtype.type not in ALLOWED_DTYPES:
            raise CheckpointError(f"checkpoint {path}: tensor {name} has dtype {dtype}, expected float32 or float64")
    weights = DFSTWeights(*(tensors[name] for name in TENSOR_NAMES))

    metadata = load_metadata(path)
    stored_task = metadata.get("task")
    if stored_task not in TASKS:
        raise CheckpointError(f"checkpoint {path}: metadata task {stored_task!r} is not one of {', '.join(TASKS)}")
    if task is not None and stored_task != task:
        raise CheckpointError(f"checkpoint {path} is for task {stored_task!r}, not the requested task {task!r}")
    try:
        weights.validate(get_expert(stored_task).num_symbols)
    except WeightsError as error:
        raise CheckpointError(f"checkpoint {path}: {error}") from None
    if metadata.get("sha256") != weights.sha256():
        raise CheckpointError(
            f"checkpoint {path}: the weights' sha256 {weights.sha256()[:12]} differs from the metadata's "
            f"{str(metadata.get('sha256'))[:12]}; the two files do not belong together"
        )
    return weights, metadata
