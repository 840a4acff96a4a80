"""Model lookup for the service, against the API of :mod:`dfst.registry`.

``load_model``, ``list_models`` and ``default_model_name`` are the registry's
functions when :mod:`dfst.registry` exists.  Otherwise the built-in oracle
models ``oracle-<task>`` (the expert written into DFST weights, Theorem 2.1
of arXiv 2511.22751) and ``.safetensors`` checkpoint paths stand in.
"""

from __future__ import annotations

import logging
import pathlib

import numpy as np

from dfst.experts import TASKS, get_expert
from dfst.oracle import oracle_weights
from dfst.weights import DFSTWeights

logger = logging.getLogger(__name__)

ORACLE_PREFIX = "oracle-"


class _FallbackModelNotFoundError(LookupError):
    """A model name is neither a known model nor a readable checkpoint file."""


def _built_tasks() -> list[str]:
    built = []
    for task in TASKS:
        try:
            get_expert(task)
        except NotImplementedError:
            continue
        built.append(task)
    return built


def _fallback_default_model_name(task: str) -> str:
    return ORACLE_PREFIX + task


def _fallback_list_models() -> list[dict]:
    models = []
    for task in _built_tasks():
        weights = oracle_weights(get_expert(task))
        models.append({
            "name": ORACLE_PREFIX + task, "task": task, "source": "builtin", "sha256": weights.sha256(),
            "hidden_dim": weights.hidden_dim, "parameters": weights.num_parameters,
        })
    return models


def _fallback_load_model(name_or_path: str) -> tuple[DFSTWeights, dict]:
    if name_or_path.startswith(ORACLE_PREFIX):
        task = name_or_path[len(ORACLE_PREFIX):]
        if task not in _built_tasks():
            raise _FallbackModelNotFoundError(
                f"unknown model {name_or_path!r}; built-in models are "
                f"{', '.join(ORACLE_PREFIX + t for t in _built_tasks())}"
            )
        weights = oracle_weights(get_expert(task))
        return weights, {"name": name_or_path, "task": task, "source": "builtin"}
    path = pathlib.Path(name_or_path)
    if path.suffix != ".safetensors" or not path.is_file():
        raise _FallbackModelNotFoundError(
            f"unknown model {name_or_path!r}; give a built-in name "
            f"({', '.join(ORACLE_PREFIX + t for t in _built_tasks())}) or a .safetensors checkpoint path"
        )
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        tensors = {key: handle.get_tensor(key) for key in ("A", "B", "C", "h0")}
        metadata = dict(handle.metadata() or {})
    weights = DFSTWeights(*(np.asarray(tensors[key]) for key in ("A", "B", "C", "h0")))
    metadata.setdefault("name", path.stem)
    return weights, metadata


try:
    from dfst.registry import ModelNotFoundError, default_model_name, list_models, load_model
except ImportError:
    # NOTE: stands in until dfst.registry lands; it knows only the oracle models and checkpoint paths.
    ModelNotFoundError = _FallbackModelNotFoundError
    default_model_name = _fallback_default_model_name
    list_models = _fallback_list_models
    load_model = _fallback_load_model


def model_task(metadata: dict) -> str | None:
    """Return the task recorded in a model's metadata, if any."""
    task = metadata.get("task")
    return str(task) if task else None
