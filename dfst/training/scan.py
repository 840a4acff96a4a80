"""Teacher-forced hidden states by a parallel prefix scan (log depth in T).

With observed symbols x_0 .. x_{T-1}, h_t = A[x_{t-1}] ... A[x_0] h0.  The
prefix products P_t = A[x_t] ... A[x_0] form an inclusive scan under matrix
multiplication, which is associative, so a Hillis-Steele scan computes all of
them in ceil(log2 T) rounds of batched matmuls.  Each round costs O(T d^3)
work against O(T d^2) for the sequential recurrence, a good trade on a GPU and
a poor one on a CPU (see :mod:`dfst.training.fused`).
"""

from __future__ import annotations

import torch

from dfst.training.model import DFST


def prefix_products(matrices: torch.Tensor) -> torch.Tensor:
    """Return the inclusive scan P_t = M_t @ ... @ M_0 of matrices (N, T, d, d)."""
    scanned = matrices
    steps = matrices.shape[1]
    offset = 1
    while offset < steps:
        # P_t <- P_t @ P_{t - offset} for t >= offset; earlier prefixes are complete.
        combined = scanned[:, offset:] @ scanned[:, :-offset]
        scanned = torch.cat([scanned[:, :offset], combined], dim=1)
        offset *= 2
    return scanned


def scan_hidden(model: DFST, observed: torch.Tensor) -> torch.Tensor:
    """Return hidden states h_0 .. h_{T-1} (N, T, d) by the parallel prefix scan."""
    n, steps = observed.shape
    h0 = model.h0.expand(n, -1)
    if steps == 1:
        return h0.unsqueeze(1)
    products = prefix_products(model.A[observed[:, :-1]])  # (N, T-1, d, d)
    later = torch.einsum("ntij,nj->nti", products, h0)  # h_1 .. h_{T-1}
    return torch.cat([h0.unsqueeze(1), later], dim=1)
