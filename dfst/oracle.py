"""The oracle DFST: an expert's table written into DFST weights (Theorem 2.1 of arXiv 2511.22751)."""

from __future__ import annotations

import numpy as np

from dfst.experts import ExpertSpec
from dfst.experts.spec import UNDEFINED
from dfst.grid import MOTIONS
from dfst.weights import DFSTWeights


def oracle_weights(expert: ExpertSpec, dtype=np.float32) -> DFSTWeights:
    """Build the DFST whose hidden state is the one-hot expert state.

    For δ(q, σ) = (q', σ', m): A[σ][q', q] = B[σ][σ', q] = C[σ][m, q] = 1, and
    h0 is the one-hot start state.  Pairs the expert never meets stay zero.
    """
    k, d = expert.num_symbols, expert.num_states
    A = np.zeros((k, d, d), dtype=dtype)
    B = np.zeros((k, k, d), dtype=dtype)
    C = np.zeros((k, len(MOTIONS), d), dtype=dtype)
    for q in range(d):
        for symbol in range(k):
            target = expert.next_state[q, symbol]
            if target == UNDEFINED:
                continue
            A[symbol, target, q] = 1
            B[symbol, expert.write[q, symbol], q] = 1
            C[symbol, expert.move[q, symbol], q] = 1
    h0 = np.zeros(d, dtype=dtype)
    h0[expert.start_state] = 1
    return DFSTWeights(A, B, C, h0)
