"""Fused sequential forward and backward pass of the teacher-forced DFST loss (numba, CPU).

One compiled call computes the loss of :mod:`dfst.training.model` and its
gradients with respect to A, B, C and h0 for a whole batch.  Per trace it runs
the recurrence forwards, storing h_t and the emission gradient
e_t = B[x_t]^T dL/dy_t + C[x_t]^T dL/dm_t, then backwards:

    g_T = 0,   dA[x_t] += g_{t+1} h_t^T,   g_t = A[x_t]^T g_{t+1} + e_t,

and dh0 accumulates g_0.  With L the mean over the valid steps of the squared
error, dL/dy_t = 2 (y_t - onehot(w_t)) / S for S valid steps in the batch
(likewise for m_t).  Arithmetic runs in the dtype of the weights (float32 or
float64); the loss is accumulated in float64.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, fastmath=False)
def loss_and_gradients(A, B, C, h0, observed, written, motions, lengths):
    """Return (loss, dA, dB, dC, dh0) for a padded batch of traces.

    Every inner loop runs over the output index, so LLVM vectorises it
    without reordering a sum.  Each output still adds its terms one at a time
    in increasing order of the summed index, as a plain dot product would.
    """
    k, d, _ = A.shape
    num_motions = C.shape[1]
    rows = d + k + num_motions
    batch, steps = observed.shape
    dtype = A.dtype
    dA = np.zeros_like(A)
    dB = np.zeros_like(B)
    dC = np.zeros_like(C)
    dh0 = np.zeros_like(h0)
    # stacked[x, j] = column j of [A[x]; B[x]; C[x]]: one pass over j gives h_{t+1} and both scores
    stacked = np.empty((k, d, rows), dtype=dtype)
    for x in range(k):
        for j in range(d):
            for i in range(d):
                stacked[x, j, i] = A[x, i, j]
            for s in range(k):
                stacked[x, j, d + s] = B[x, s, j]
            for s in range(num_motions):
                stacked[x, j, d + k + s] = C[x, s, j]
    hidden = np.zeros((steps + 1, d), dtype=dtype)
    emission_grad = np.zeros((steps, d), dtype=dtype)
    scores = np.zeros(rows, dtype=dtype)
    gy = np.zeros(k, dtype=dtype)
    gm = np.zeros(num_motions, dtype=dtype)
    g = np.zeros(d, dtype=dtype)
    g_next = np.zeros(d, dtype=dtype)

    total_steps = 0
    for n in range(batch):
        total_steps += lengths[n]
    two_over_steps = dtype.type(2.0) / dtype.type(total_steps)
    loss = 0.0

    for n in range(batch):
        length = lengths[n]
        for i in range(d):
            hidden[0, i] = h0[i]

        # forward: hidden states, loss, emission gradients, dB and dC
        for t in range(length):
            x = observed[n, t]
            for r in range(rows):
                scores[r] = 0.0
            for j in range(d):
                hj = hidden[t, j]
                for r in range(rows):
                    scores[r] += stacked[x, j, r] * hj
            for i in range(d):
                hidden[t + 1, i] = scores[i]
            for s in range(k):
                residual = scores[d + s] - (dtype.type(1.0) if s == written[n, t] else dtype.type(0.0))
                loss += float(residual) * float(residual)
                gy[s] = two_over_steps * residual
            for s in range(num_motions):
                residual = scores[d + k + s] - (dtype.type(1.0) if s == motions[n, t] else dtype.type(0.0))
                loss += float(residual) * float(residual)
                gm[s] = two_over_steps * residual
            for j in range(d):
                emission_grad[t, j] = 0.0
            for s in range(k):
                gs = gy[s]
                for j in range(d):
                    dB[x, s, j] += gs * hidden[t, j]
                    emission_grad[t, j] += B[x, s, j] * gs
            for s in range(num_motions):
                gs = gm[s]
                for j in range(d):
                    dC[x, s, j] += gs * hidden[t, j]
                    emission_grad[t, j] += C[x, s, j] * gs

        # backward through the recurrence
        for i in range(d):
            g_next[i] = 0.0
        for t in range(length - 1, -1, -1):
            x = observed[n, t]
            for j in range(d):
                g[j] = emission_grad[t, j]
            for i in range(d):
                gi = g_next[i]
                for j in range(d):
                    dA[x, i, j] += gi * hidden[t, j]
                    g[j] += A[x, i, j] * gi
            for j in range(d):
                g_next[j] = g[j]
        for j in range(d):
            dh0[j] += g_next[j]

    return loss / total_steps, dA, dB, dC, dh0


def fused_loss_and_gradients(weights_arrays, batch):
    """Run :func:`loss_and_gradients` on numpy arrays (A, B, C, h0) and a TraceBatch."""
    A, B, C, h0 = (np.ascontiguousarray(a) for a in weights_arrays)
    return loss_and_gradients(
        A, B, C, h0,
        np.ascontiguousarray(batch.observed), np.ascontiguousarray(batch.written),
        np.ascontiguousarray(batch.motions), np.ascontiguousarray(batch.lengths),
    )
