"""Model lookup for the service: the registry of :mod:`dfst.registry`."""

from __future__ import annotations

from dfst.checkpoint import CheckpointError
from dfst.registry import (
    InvalidModelNameError,
    ModelNotFoundError,
    default_model_name,
    list_models,
    load_model,
    save_user_model,
)

# Errors load_model raises for a model name or file the caller got wrong.
MODEL_ERRORS = (ModelNotFoundError, InvalidModelNameError, CheckpointError)


def model_task(metadata: dict) -> str | None:
    """Return the task recorded in a model's metadata, if any."""
    task = metadata.get("task")
    return str(task) if task else None


__all__ = ["MODEL_ERRORS", "ModelNotFoundError", "default_model_name", "list_models", "load_model",
           "model_task", "save_user_model"]
