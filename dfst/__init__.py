"""dfst: Differentiable Finite-State Transducers that learn exact arithmetic.

The library side of dfst, after "Exact Learning of Arithmetic with
Differentiable Agents" (Papazov, D'Angelo, Flammarion; arXiv 2511.22751):

>>> import dfst
>>> expert = dfst.get_expert("add10")
>>> run = dfst.run_expert(expert, 457, 68)
>>> run.answer, run.steps
(525, ...)
"""

from dfst.data import (
    DEFAULT_SELECTION,
    SelectionConfig,
    build_dataset,
    coverage,
    select_covering_pairs,
    select_pairs,
)
from dfst.experts import TASKS, ExpertSpec, UnknownTaskError, get_expert
from dfst.grid import Alphabet, Grid, problem_grid, read_answer
from dfst.oracle import oracle_weights
from dfst.runner import ExpertRun, ExpertRunError, Trace, count_steps, record_trace, run_expert
from dfst.weights import DFSTWeights, WeightsError, count_parameters

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_SELECTION",
    "TASKS",
    "Alphabet",
    "DFSTWeights",
    "ExpertRun",
    "ExpertRunError",
    "ExpertSpec",
    "Grid",
    "SelectionConfig",
    "Trace",
    "UnknownTaskError",
    "WeightsError",
    "build_dataset",
    "count_parameters",
    "count_steps",
    "coverage",
    "get_expert",
    "oracle_weights",
    "problem_grid",
    "read_answer",
    "record_trace",
    "run_expert",
    "select_covering_pairs",
    "select_pairs",
]
