"""Exact table-driven rollouts of DFSTs in automaton form.

A DFST is in automaton form when every entry of every A[x] is 0 or 1, every
column of A[x] has at most one 1, and h0 is a unit vector e_j with h0[j]
exactly 1.  Oracle DFSTs and automata extracted from trained models have this
form.  Its hidden state is then always e_j for some j, or the zero vector once a
column of A[x] is all zero.  The kernels compute every such step exactly:
``W[x]ᵀ e_j`` is column j of ``[A[x]; B[x]; C[x]]`` with no rounding, because
a product with 1 is exact and a skipped zero term changes at most the sign of
a zero.  So a table over (state, symbol), with state j standing for e_j and
state d for the zero vector, gives the same writes, motions, hidden states and
step counts as the kernels, at one table lookup per step or less.
"""

from __future__ import annotations

import numpy as np

from dfst.rollout import kernel
from dfst.weights import DFSTWeights


class AutomatonTable:
    """The (state, symbol) table of a DFST in automaton form, packed for :func:`kernel.expert_lockstep`."""

    def __init__(self, packed: np.ndarray, hidden_dim: int, start_state: int):
        self.packed = packed  # (d + 1) · K int32 entries, see kernel.pack_table
        self.hidden_dim = hidden_dim  # d; state d is the zero hidden vector
        self.start_state = start_state  # j with h0 = e_j

    def states_of(self, hidden: np.ndarray) -> np.ndarray | None:
        """Return the state of each row of ``hidden`` (L, d), or None if some row is neither e_j nor zero."""
        nonzero = hidden != 0
        counts = nonzero.sum(axis=1)
        if np.any(counts > 1):
            return None
        states = np.where(counts == 1, nonzero.argmax(axis=1), self.hidden_dim).astype(np.int64)
        ones = hidden[np.arange(len(hidden)), np.minimum(states, self.hidden_dim - 1)] == 1
        if not np.all(ones | (counts == 0)):
            return None
        return states

    def hidden_of(self, states: np.ndarray, dtype) -> np.ndarray:
        """Return the hidden vectors (L, d) of ``states``: e_j for state j < d, zero for state d."""
        hidden = np.zeros((len(states), self.hidden_dim + 1), dtype=dtype)
        hidden[np.arange(len(states)), states] = 1
        return np.ascontiguousarray(hidden[:, : self.hidden_dim])


def automaton_table(weights: DFSTWeights) -> AutomatonTable | None:
    """Return the exact table of ``weights`` if they are in automaton form (see the module), else None."""
    A, B, C, h0 = (np.asarray(t) for t in (weights.A, weights.B, weights.C, weights.h0))
    k, d = weights.num_symbols, weights.hidden_dim
    if not np.all((A == 0) | (A == 1)) or np.any((A == 1).sum(axis=1) > 1):
        return None
    if np.count_nonzero(h0) != 1 or h0[np.flatnonzero(h0)[0]] != 1:
        return None

    # next_state[j, x]: the row i with A[x][i, j] = 1, or d when column j of A[x] is zero
    has_one = (A == 1).any(axis=1)  # (K, d)
    next_state = np.where(has_one, (A == 1).argmax(axis=1), d).T  # (d, K)
    # numpy.argmax picks the first maximum, as the kernels do; -0 and +0 compare equal
    write = B.argmax(axis=1).T  # (d, K)
    move = C.argmax(axis=1).T
    # the zero vector scores 0 everywhere: it writes symbol 0, moves by motion 0 and stays zero
    next_state = np.vstack([next_state, np.full((1, k), d)])
    write = np.vstack([write, np.zeros((1, k), dtype=write.dtype)])
    move = np.vstack([move, np.zeros((1, k), dtype=move.dtype)])
    packed = kernel.pack_table(next_state, write, move)
    return AutomatonTable(packed, d, int(np.flatnonzero(h0)[0]))
