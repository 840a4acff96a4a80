"""The DFST as a torch module, and teacher-forced losses over padded trace batches.

A DFST (arXiv 2511.22751, "Exact Learning of Arithmetic with Differentiable
Agents") observes symbol x_t and computes y_t = B[x_t] h_t (write scores),
m_t = C[x_t] h_t (motion scores) and h_{t+1} = A[x_t] h_t.  Under teacher
forcing the observed symbols come from the expert's trace, so the hidden
states are prefix products of the matrices A[x_t] applied to h0.

Loss normalisation, shared by every training path: for each valid (unpadded)
step, the squared error summed over the K write scores and the 5 motion scores
against the one-hot expert write and motion; then the mean over all valid steps
of the batch.  Padding steps contribute nothing.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from dfst.grid import MOTIONS
from dfst.runner import Trace
from dfst.weights import DFSTWeights

NUM_MOTIONS = len(MOTIONS)


class DFST(nn.Module):
    """A DFST with trainable A (K, d, d), B (K, K, d), C (K, 5, d) and h0 (d,)."""

    def __init__(self, num_symbols: int, hidden_dim: int, seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__()
        if num_symbols < 1 or hidden_dim < 1:
            raise ValueError(f"num_symbols and hidden_dim must be at least 1, got {num_symbols} and {hidden_dim}")
        k, d = num_symbols, hidden_dim
        generator = torch.Generator().manual_seed(seed)
        # Paper's initialisation: identity transitions, zero emissions, and h0
        # uniform in (0, 1) per coordinate, scaled to unit Euclidean norm.
        h0 = torch.rand(d, generator=generator, dtype=torch.float64)
        h0 = h0 / torch.linalg.vector_norm(h0)
        self.A = nn.Parameter(torch.eye(d, dtype=dtype).repeat(k, 1, 1))
        self.B = nn.Parameter(torch.zeros(k, k, d, dtype=dtype))
        self.C = nn.Parameter(torch.zeros(k, NUM_MOTIONS, d, dtype=dtype))
        self.h0 = nn.Parameter(h0.to(dtype))

    @property
    def num_symbols(self) -> int:
        return self.A.shape[0]

    @property
    def hidden_dim(self) -> int:
        return self.A.shape[1]

    @classmethod
    def from_weights(cls, weights: DFSTWeights, dtype: torch.dtype = torch.float32) -> DFST:
        """Build a module holding a copy of ``weights``."""
        weights.validate()
        model = cls(weights.num_symbols, weights.hidden_dim, dtype=dtype)
        with torch.no_grad():
            for name in ("A", "B", "C", "h0"):
                getattr(model, name).copy_(torch.from_numpy(np.asarray(getattr(weights, name))).to(dtype))
        return model

    def to_weights(self) -> DFSTWeights:
        """Return the weights as float32 numpy arrays."""
        arrays = [getattr(self, name).detach().cpu().numpy().astype(np.float32) for name in ("A", "B", "C", "h0")]
        return DFSTWeights(*(np.ascontiguousarray(a) for a in arrays))

    def emissions(self, observed: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return write and motion scores (N, T, K) and (N, T, 5) for hidden states (N, T, d)."""
        y = torch.einsum("ntkd,ntd->ntk", self.B[observed], hidden)  # (N, T, K)
        m = torch.einsum("ntkd,ntd->ntk", self.C[observed], hidden)  # (N, T, 5)
        return y, m


@dataclasses.dataclass(frozen=True)
class TraceBatch:
    """Traces padded to a common length T; padding steps have mask 0."""

    observed: np.ndarray  # (N, T) int64 observed symbols, 0 in padding
    written: np.ndarray  # (N, T) int64 expert write symbols, 0 in padding
    motions: np.ndarray  # (N, T) int64 expert motions, 0 in padding
    lengths: np.ndarray  # (N,) int64 number of valid steps per trace

    @property
    def mask(self) -> np.ndarray:
        """(N, T) float mask, 1 on valid steps."""
        steps = np.arange(self.observed.shape[1])
        return (steps[None, :] < self.lengths[:, None]).astype(np.float64)


def pad_traces(traces: list[Trace]) -> TraceBatch:
    """Pad traces into one :class:`TraceBatch`."""
    if not traces:
        raise ValueError("cannot pad an empty list of traces")
    lengths = np.array([len(t) for t in traces], dtype=np.int64)
    shape = (len(traces), int(lengths.max()))
    observed, written, motions = (np.zeros(shape, dtype=np.int64) for _ in range(3))
    for i, trace in enumerate(traces):
        n = len(trace)
        observed[i, :n] = trace.observed
        written[i, :n] = trace.written
        motions[i, :n] = trace.motions
    return TraceBatch(observed, written, motions, lengths)


def loss_from_scores(
    y: torch.Tensor, m: torch.Tensor, written: torch.Tensor, motions: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Return the masked MSE loss described in the module docstring."""
    target_y = nn.functional.one_hot(written, y.shape[-1]).to(y.dtype)
    target_m = nn.functional.one_hot(motions, m.shape[-1]).to(m.dtype)
    per_step = ((y - target_y) ** 2).sum(-1) + ((m - target_m) ** 2).sum(-1)  # (N, T)
    return (per_step * mask).sum() / mask.sum()


def step_loop_hidden(model: DFST, observed: torch.Tensor) -> torch.Tensor:
    """Return hidden states h_0 .. h_{T-1} (N, T, d) by the sequential recurrence."""
    n, steps = observed.shape
    h = model.h0.expand(n, -1)
    states = []
    for t in range(steps):
        states.append(h)
        h = torch.bmm(model.A[observed[:, t]], h.unsqueeze(-1)).squeeze(-1)
    return torch.stack(states, dim=1)


def batch_loss(model: DFST, batch: TraceBatch, hidden_fn) -> torch.Tensor:
    """Return the loss of ``model`` on ``batch`` with hidden states from ``hidden_fn(model, observed)``."""
    device = model.A.device
    observed = torch.from_numpy(batch.observed).to(device)
    hidden = hidden_fn(model, observed)
    y, m = model.emissions(observed, hidden)
    mask = torch.from_numpy(batch.mask).to(device=device, dtype=y.dtype)
    written = torch.from_numpy(batch.written).to(device)
    motions = torch.from_numpy(batch.motions).to(device)
    return loss_from_scores(y, m, written, motions, mask)
