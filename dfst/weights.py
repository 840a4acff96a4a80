"""DFST weights as plain arrays, shared by the oracle, training and the rollout engine.

A DFST over K symbols with hidden dimension d (arXiv 2511.22751, "Exact Learning
of Arithmetic with Differentiable Agents") observes symbol x_t and computes

    y_t = B[x_t] h_t,   m_t = C[x_t] h_t,   h_{t+1} = A[x_t] h_t

where y_t scores the symbol to write and m_t the motion (U, D, L, R, S).
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from dfst.grid import MOTIONS


class WeightsError(ValueError):
    """DFST weights have the wrong shape, dtype or non-finite values."""


@dataclasses.dataclass(frozen=True)
class DFSTWeights:
    """The four DFST tensors."""

    A: np.ndarray  # (K, d, d) state transition per observed symbol
    B: np.ndarray  # (K, K, d) symbol scores per observed symbol
    C: np.ndarray  # (K, 5, d) motion scores per observed symbol
    h0: np.ndarray  # (d,) initial hidden state

    @property
    def num_symbols(self) -> int:
        return self.A.shape[0]

    @property
    def hidden_dim(self) -> int:
        return self.A.shape[1]

    @property
    def num_parameters(self) -> int:
        return self.A.size + self.B.size + self.C.size + self.h0.size

    def astype(self, dtype) -> DFSTWeights:
        return DFSTWeights(*(np.ascontiguousarray(t, dtype=dtype) for t in (self.A, self.B, self.C, self.h0)))

    def sha256(self) -> str:
        """sha256 over the float32 bytes of A, B, C and h0, in that order."""
        digest = hashlib.sha256()
        for tensor in (self.A, self.B, self.C, self.h0):
            digest.update(np.ascontiguousarray(tensor, dtype=np.float32).tobytes())
        return digest.hexdigest()

    def validate(self, num_symbols: int | None = None) -> None:
        """Raise WeightsError unless the shapes agree, the dtype is floating and every value is finite."""
        for name in ("A", "B", "C", "h0"):
            tensor = getattr(self, name)
            if not isinstance(tensor, np.ndarray) or tensor.dtype.kind != "f":
                raise WeightsError(f"tensor {name} must be a floating-point array, got {type(tensor).__name__}")
        if self.A.ndim != 3 or self.A.shape[1] != self.A.shape[2]:
            raise WeightsError(f"A must have shape (K, d, d), got {self.A.shape}")
        k, d = self.A.shape[0], self.A.shape[1]
        if d < 1:
            raise WeightsError(f"hidden dimension d must be at least 1, got {d}")
        expected = {"B": (k, k, d), "C": (k, len(MOTIONS), d), "h0": (d,)}
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                actual = getattr(self, name).shape
                raise WeightsError(f"{name} must have shape {shape} to match A {self.A.shape}, got {actual}")
        if num_symbols is not None and k != num_symbols:
            raise WeightsError(f"the weights have K={k} symbols but the task's alphabet has {num_symbols}")
        for name in ("A", "B", "C", "h0"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise WeightsError(f"tensor {name} contains non-finite values (NaN or infinity)")


def count_parameters(num_symbols: int, hidden_dim: int) -> int:
    """Return K·d² + K²·d + 5·K·d + d."""
    k, d = num_symbols, hidden_dim
    return k * d * d + k * k * d + len(MOTIONS) * k * d + d
