"""Named DFST models: shipped checkpoints, a user registry folder, built-in oracles and file paths.

``load_model(name_or_path)`` resolves, in order:

1. ``oracle-<task>``: the Theorem 2.1 construction for the task's expert
   ("Exact Learning of Arithmetic with Differentiable Agents", arXiv 2511.22751);
2. a shipped model, ``dfst/models/<name>.safetensors`` (package data);
3. a user model, ``<user dir>/<name>.safetensors``, where the user dir is
   ``$DFST_MODEL_DIR`` or ``~/.local/share/dfst/models``;
4. an explicit path to a ``.safetensors`` file (anything containing a path
   separator or ending in ``.safetensors``).

Names match ``^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`` and must resolve to a file
inside their registry folder, so a name cannot reach outside it.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from dfst.checkpoint import CheckpointError, load_checkpoint, load_metadata, save_checkpoint
from dfst.experts import TASKS, get_expert
from dfst.oracle import oracle_weights
from dfst.weights import DFSTWeights, count_parameters

logger = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).parent / "models"
DEFAULT_USER_DIR = Path("~/.local/share/dfst/models")
USER_DIR_VARIABLE = "DFST_MODEL_DIR"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ORACLE_PREFIX = "oracle-"
SUFFIX = ".safetensors"


class ModelNotFoundError(LookupError):
    """A model name or path does not resolve to a model; the message lists the known names."""


class InvalidModelNameError(ValueError):
    """A model name does not match NAME_PATTERN."""


def user_dir() -> Path:
    """Return the user registry folder: $DFST_MODEL_DIR, else ~/.local/share/dfst/models."""
    configured = os.environ.get(USER_DIR_VARIABLE)
    return Path(configured).expanduser() if configured else DEFAULT_USER_DIR.expanduser()


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid model name, else raise InvalidModelNameError."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidModelNameError(
            f"invalid model name {name!r}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return name


def _inside(folder: Path, name: str) -> Path | None:
    """Return folder/name.safetensors if it exists and resolves inside ``folder``."""
    candidate = folder / f"{name}{SUFFIX}"
    if not candidate.is_file():
        return None
    resolved, root = candidate.resolve(), folder.resolve()
    if not resolved.is_relative_to(root):
        logger.warning("ignoring model %s: it resolves to %s, outside %s", candidate, resolved, root)
        return None
    return candidate


def _builtin_tasks() -> list[str]:
    tasks = []
    for task in TASKS:
        try:
            get_expert(task)
        except NotImplementedError:
            continue
        tasks.append(task)
    return tasks


def _oracle(name: str) -> tuple[DFSTWeights, dict[str, Any]]:
    task = name[len(ORACLE_PREFIX):]
    if task not in _builtin_tasks():
        raise ModelNotFoundError(f"unknown model {name!r}; known models are {', '.join(known_names())}")
    expert = get_expert(task)
    weights = oracle_weights(expert)
    metadata = {
        "name": name,
        "task": task,
        "variant": "oracle",
        "source": "builtin",
        "path": None,
        "sha256": weights.sha256(),
        "num_symbols": weights.num_symbols,
        "hidden_dim": weights.hidden_dim,
        "expert_table_hash": expert.table_hash,
    }
    return weights, metadata


def _folder_names(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(SUFFIX)] for p in folder.glob(f"*{SUFFIX}") if NAME_PATTERN.match(p.stem))


def known_names() -> list[str]:
    """Return every model name that ``load_model`` resolves, built-ins first."""
    names = [ORACLE_PREFIX + task for task in _builtin_tasks()]
    for name in _folder_names(SHIPPED_DIR) + _folder_names(user_dir()):
        if name not in names:
            names.append(name)
    return names


def is_path(name_or_path: str) -> bool:
    """Return True if ``load_model`` treats the string as a file path rather than a registry name."""
    return os.sep in name_or_path or "/" in name_or_path or name_or_path.endswith(SUFFIX)


def load_model(name_or_path: str, allow_paths: bool = True) -> tuple[DFSTWeights, dict[str, Any]]:
    """Load a model by name or path; return its weights and checkpoint metadata.

    The metadata gains ``name``, ``source`` ("builtin", "shipped", "user" or
    "file") and ``path``.  Raises ModelNotFoundError for unknown names, and for
    any path when ``allow_paths`` is false, and CheckpointError for broken files.
    """
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ModelNotFoundError(f"model name must be a non-empty string, got {name_or_path!r}")
    if name_or_path.startswith(ORACLE_PREFIX):
        return _oracle(name_or_path)
    if is_path(name_or_path) and not allow_paths:
        # The same message for every path, so that callers cannot probe which files exist.
        raise ModelNotFoundError(
            "model paths are not accepted here; pass a registry name (dfst-client models list shows them)"
        )
    if is_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"model file {path} not found")
        weights, metadata = load_checkpoint(path)
        return weights, dict(metadata, name=path.stem, source="file", path=str(path))
    name = validate_name(name_or_path)
    for source, folder in (("shipped", SHIPPED_DIR), ("user", user_dir())):
        path = _inside(folder, name)
        if path is not None:
            weights, metadata = load_checkpoint(path)
            return weights, dict(metadata, name=name, source=source, path=str(path))
    raise ModelNotFoundError(f"unknown model {name!r}; known models are {', '.join(known_names())}")


def _shape_fields(metadata: dict[str, Any]) -> dict[str, int | None]:
    """Return hidden_dim and parameters from checkpoint metadata, None where it lacks them."""
    num_symbols, hidden_dim = metadata.get("num_symbols"), metadata.get("hidden_dim")
    if not isinstance(num_symbols, int) or not isinstance(hidden_dim, int):
        return {"hidden_dim": None, "parameters": None}
    return {"hidden_dim": hidden_dim, "parameters": count_parameters(num_symbols, hidden_dim)}


def list_models() -> list[dict[str, Any]]:
    """Return name, task, path, sha256, source, hidden_dim and parameters of every model.

    Unreadable files are skipped with a warning.
    """
    models = []
    for task in _builtin_tasks():
        _, metadata = _oracle(ORACLE_PREFIX + task)
        entry = {key: metadata[key] for key in ("name", "task", "path", "sha256", "source")}
        models.append(entry | _shape_fields(metadata))
    seen = {model["name"] for model in models}
    for source, folder in (("shipped", SHIPPED_DIR), ("user", user_dir())):
        for name in _folder_names(folder):
            path = _inside(folder, name)
            if path is None or name in seen:
                continue
            try:
                metadata = load_metadata(path)
            except CheckpointError as error:
                logger.warning("skipping model %s: %s", path, error)
                continue
            seen.add(name)
            entry = {"name": name, "task": metadata.get("task"), "path": str(path),
                     "sha256": metadata.get("sha256"), "source": source}
            models.append(entry | _shape_fields(metadata))
    return models


def default_model_name(task: str) -> str:
    """Return the name of the shipped model for ``task``; raise ModelNotFoundError if none is shipped."""
    if _inside(SHIPPED_DIR, task) is None:
        shipped = _folder_names(SHIPPED_DIR)
        raise ModelNotFoundError(
            f"no shipped model for task {task!r}; shipped models are {', '.join(shipped) or 'none'}"
        )
    return task


def save_user_model(name: str, weights: DFSTWeights, metadata: dict[str, Any]) -> Path:
    """Save a model into the user registry under ``name`` and return its path."""
    validate_name(name)
    if name.startswith(ORACLE_PREFIX):
        raise InvalidModelNameError(f"model name {name!r} is reserved for built-in oracles")
    return save_checkpoint(user_dir() / f"{name}{SUFFIX}", weights, metadata)
