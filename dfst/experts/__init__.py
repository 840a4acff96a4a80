"""The expert grid agents and their registry, keyed by task name."""

from __future__ import annotations

import functools

from dfst.experts.addition import addition_expert
from dfst.experts.multiplication import multiplication_expert
from dfst.experts.spec import HALT, ExpertSpec, Rule

TASKS = ("add2", "add10", "mult2", "mult10")


class UnknownTaskError(ValueError):
    """A task name is not one of :data:`TASKS`."""


@functools.cache
def get_expert(task: str) -> ExpertSpec:
    """Return the expert for a task name such as ``"add10"``."""
    if task not in TASKS:
        raise UnknownTaskError(f"unknown task {task!r}; known tasks are {', '.join(TASKS)}")
    operation, radix = (task[:3], int(task[3:])) if task.startswith("add") else (task[:4], int(task[4:]))
    if operation == "add":
        return addition_expert(radix)
    return multiplication_expert(radix)


__all__ = ["HALT", "TASKS", "ExpertSpec", "Rule", "UnknownTaskError", "get_expert"]
