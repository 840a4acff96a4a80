"""The torch DFST, the parallel scan and the fused numba gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfst.data import build_dataset, select_pairs
from dfst.experts import get_expert
from dfst.oracle import oracle_weights
from dfst.training.fused import fused_loss_and_gradients
from dfst.training.model import DFST, batch_loss, pad_traces, step_loop_hidden
from dfst.training.scan import prefix_products, scan_hidden


def _perturbed(task: str, dtype: torch.dtype, seed: int = 1) -> DFST:
    expert = get_expert(task)
    model = DFST(expert.num_symbols, expert.num_states, seed=seed, dtype=dtype)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator, dtype=dtype))
    return model


def _batch(task: str, count: int | None = None):
    # multiplication traces are long, so a few suffice there
    count = count or (12 if task.startswith("add") else 3)
    return pad_traces(build_dataset(task, select_pairs(task)[:count]))


def test_initialisation_follows_paper():
    model = DFST(4, 11, seed=3)
    assert torch.equal(model.A, torch.eye(11).repeat(4, 1, 1))
    assert not model.B.any()
    assert not model.C.any()
    assert torch.all(model.h0 > 0)
    assert torch.isclose(torch.linalg.vector_norm(model.h0), torch.tensor(1.0))


def test_initialisation_is_seeded():
    assert torch.equal(DFST(4, 11, seed=3).h0, DFST(4, 11, seed=3).h0)
    assert not torch.equal(DFST(4, 11, seed=3).h0, DFST(4, 11, seed=4).h0)


def test_weights_round_trip():
    weights = oracle_weights(get_expert("add10"))
    model = DFST.from_weights(weights)
    again = model.to_weights()
    assert again.A.dtype == np.float32
    assert again.sha256() == weights.sha256()


@pytest.mark.parametrize("steps", [1, 2, 3, 7, 8, 33])
def test_prefix_products_match_sequential(steps):
    generator = torch.Generator().manual_seed(steps)
    matrices = torch.randn(2, steps, 5, 5, generator=generator, dtype=torch.float64) / 2
    scanned = prefix_products(matrices)
    product = torch.eye(5, dtype=torch.float64).expand(2, 5, 5)
    for t in range(steps):
        product = matrices[:, t] @ product
        assert torch.allclose(scanned[:, t], product, atol=1e-12)


def test_scan_hidden_matches_recurrence(task):
    model = _perturbed(task, torch.float64)
    observed = torch.from_numpy(_batch(task).observed)
    assert torch.allclose(scan_hidden(model, observed), step_loop_hidden(model, observed), atol=1e-10)


def test_loss_normalisation_by_hand():
    model = _perturbed("add2", torch.float64)
    batch = _batch("add2", 3)
    loss = float(batch_loss(model, batch, step_loop_hidden).detach())
    A, B, C, h0 = (getattr(model, n).detach().numpy() for n in ("A", "B", "C", "h0"))
    total, steps = 0.0, 0
    for n, length in enumerate(batch.lengths):
        h = h0.copy()
        for t in range(length):
            x = batch.observed[n, t]
            total += np.sum((B[x] @ h - np.eye(4)[batch.written[n, t]]) ** 2)
            total += np.sum((C[x] @ h - np.eye(5)[batch.motions[n, t]]) ** 2)
            h = A[x] @ h
            steps += 1
    assert loss == pytest.approx(total / steps, rel=1e-12)


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("hidden_fn", [step_loop_hidden, scan_hidden])
def test_fused_gradients_match_autograd(task, dtype, tolerance, hidden_fn):
    model = _perturbed(task, dtype)
    batch = _batch(task)
    loss = batch_loss(model, batch, hidden_fn)
    loss.backward()
    arrays = [getattr(model, n).detach().numpy() for n in ("A", "B", "C", "h0")]
    fused_loss, *gradients = fused_loss_and_gradients(arrays, batch)
    assert fused_loss == pytest.approx(float(loss.detach()), rel=tolerance)
    for name, gradient in zip(("A", "B", "C", "h0"), gradients, strict=True):
        expected = getattr(model, name).grad.numpy()
        assert gradient.dtype == expected.dtype
        scale = np.abs(expected).max()
        assert np.abs(gradient - expected).max() <= tolerance * scale, name


def test_oracle_has_zero_loss(task):
    model = DFST.from_weights(oracle_weights(get_expert(task)), dtype=torch.float64)
    arrays = [getattr(model, n).detach().numpy() for n in ("A", "B", "C", "h0")]
    loss, *gradients = fused_loss_and_gradients(arrays, _batch(task))
    assert loss == 0.0
    assert all(not g.any() for g in gradients)


def _sequential_gradients(A, B, C, h0, batch):
    """Return (dA, dB, dC, dh0) by plain dot products, each sum term by term in increasing index order."""
    real = A.dtype.type
    k, d, _ = A.shape
    motions = C.shape[1]
    dA, dB, dC, dh0 = (np.zeros_like(a) for a in (A, B, C, h0))
    two_over_steps = real(2.0) / real(int(batch.lengths.sum()))
    for n, length in enumerate(batch.lengths):
        hidden, emission = [h0.copy()], []
        for t in range(length):
            x, h = batch.observed[n, t], hidden[-1]
            next_hidden = np.zeros(d, dtype=A.dtype)
            for i in range(d):
                for j in range(d):
                    next_hidden[i] = real(next_hidden[i] + real(A[x, i, j] * h[j]))
            gy = np.zeros(k, dtype=A.dtype)
            gm = np.zeros(motions, dtype=A.dtype)
            for rows, out, target, grad in ((B, gy, batch.written[n, t], dB), (C, gm, batch.motions[n, t], dC)):
                for s in range(len(out)):
                    score = real(0.0)
                    for j in range(d):
                        score = real(score + real(rows[x, s, j] * h[j]))
                    out[s] = real(two_over_steps * real(score - real(s == target)))
                    for j in range(d):
                        grad[x, s, j] = real(grad[x, s, j] + real(out[s] * h[j]))
            e = np.zeros(d, dtype=A.dtype)
            for j in range(d):
                for s in range(k):
                    e[j] = real(e[j] + real(B[x, s, j] * gy[s]))
                for s in range(motions):
                    e[j] = real(e[j] + real(C[x, s, j] * gm[s]))
            hidden.append(next_hidden)
            emission.append(e)
        g_next = np.zeros(d, dtype=A.dtype)
        for t in range(length - 1, -1, -1):
            x, h = batch.observed[n, t], hidden[t]
            g = emission[t].copy()
            for i in range(d):
                for j in range(d):
                    dA[x, i, j] = real(dA[x, i, j] + real(g_next[i] * h[j]))
                    g[j] = real(g[j] + real(A[x, i, j] * g_next[i]))
            g_next = g
        dh0 += g_next
    return dA, dB, dC, dh0


def test_fused_gradients_bitwise_sequential():
    # the fused loops are ordered for vectorisation, yet every sum keeps the order of a plain dot product
    model = _perturbed("add2", torch.float32, seed=4)
    batch = pad_traces(build_dataset("add2", [(5, 3), (2, 7)]))
    arrays = [getattr(model, n).detach().numpy() for n in ("A", "B", "C", "h0")]
    _, *fused = fused_loss_and_gradients(arrays, batch)
    for name, got, expected in zip("A B C h0".split(), fused, _sequential_gradients(*arrays, batch), strict=True):
        assert np.array_equal(got.view(np.uint32), expected.view(np.uint32)), name
