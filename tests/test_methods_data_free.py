"""The 2024-26 data-free methods (TSV, Iso-C, Iso-CTS, CART, Consensus/TALL, WUDI) against
hand-computed cases and, for WUDI, against the reference algorithm written out with autograd."""

from __future__ import annotations

import math

import torch

from evomerge.merge.registry import get_method

from .test_methods import call

T = torch.tensor
D = torch.diag


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=tol)


def test_tsv_keeps_orthogonal_tasks_whole() -> None:
    # task singular vectors already orthogonal across tasks: orthogonalising changes nothing,
    # each task keeps its top k/T = 2 directions, so the result is d1 + d2
    d1, d2 = D(T([3.0, 1.0, 0.0, 0.0])), D(T([0.0, 0.0, 2.0, 0.5]))
    base = torch.ones(4, 4)
    close(call("tsv", [base + d1, base + d2], base), base + d1 + d2)
    close(call("tsv", [base + d1, base + d2], base, **{"lambda": 0.5}), base + 0.5 * (d1 + d2))


def test_tsv_orthogonalises_interfering_directions() -> None:
    # d1 = 2 u1 e1^T, d2 = 1 u2 e2^T with u1, u2 60 degrees apart: U = [u1 u2] is replaced by
    # its polar factor U (U^T U)^(-1/2); U^T U = [[1, c], [c, 1]] has the inverse square root
    # 1/2 [[a + b, a - b], [a - b, a + b]], a = 1/sqrt(1 + c), b = 1/sqrt(1 - c)
    c, s = 0.5, math.sqrt(3) / 2
    u1, u2 = T([1.0, 0.0]), T([c, s])
    d1, d2 = 2 * torch.outer(u1, T([1.0, 0.0])), torch.outer(u2, T([0.0, 1.0]))
    a, b = 1 / math.sqrt(1 + c), 1 / math.sqrt(1 - c)
    u_perp = torch.stack([u1, u2], dim=1) @ (0.5 * T([[a + b, a - b], [a - b, a + b]]))
    expect = u_perp @ D(T([2.0, 1.0]))
    base = torch.zeros(2, 2)
    close(call("tsv", [d1, d2], base), expect)
    assert float((u_perp.T @ u_perp - torch.eye(2)).abs().max()) < 1e-6


def test_iso_c_flattens_the_spectrum_of_the_sum() -> None:
    base = torch.zeros(2, 2)
    d1, d2 = D(T([3.0, 0.0])), D(T([0.0, 1.0]))
    # singular values of the sum: 3 and 1 -> both become 2
    close(call("iso_c", [d1, d2], base), D(T([2.0, 2.0])))
    close(call("iso_c", [d1, d2], base, **{"lambda": 0.5}), D(T([1.0, 1.0])))


def test_iso_cts_adds_task_specific_directions() -> None:
    # 4x4, two tasks, common_space_fraction 0.5: common = the top 2 directions of the sum
    # diag(4, 3, 1, 1.5), i.e. e1 (4) and e2 (3); with them projected out, task 1 keeps e3 (2)
    # and task 2 keeps e4 (1.5); all singular values become their mean (4 + 3 + 2 + 1.5) / 4.
    # Iso-C would take the sum's own spectrum: (4 + 3 + 1 + 1.5) / 4.
    d1, d2 = D(T([4.0, 0.0, 2.0, 0.0])), D(T([0.0, 3.0, -1.0, 1.5]))
    base = torch.zeros(4, 4)
    close(call("iso_cts", [d1, d2], base, common_space_fraction=0.5), 2.625 * torch.eye(4))
    close(call("iso_c", [d1, d2], base), 2.375 * torch.eye(4))


def test_cart_adds_low_rank_centred_task_matrices() -> None:
    # three models around the mean m = I with centred parts c1 = diag(2, .5),
    # c2 = diag(-1.2, 1), c3 = diag(-.8, -1.5); rank 1 keeps each one's largest entry:
    # diag(2, 0) + diag(-1.2, 0) + diag(0, -1.5)
    m = torch.eye(2)
    cs = [D(T([2.0, 0.5])), D(T([-1.2, 1.0])), D(T([-0.8, -1.5]))]
    out = call("cart", [m + c for c in cs], None, rank_fraction=0.5, **{"lambda": 1.0})
    close(out, m + D(T([0.8, -1.5])))
    # two models always cancel (c2 = -c1): CART of a pair is their average
    close(call("cart", [m + cs[0], m - cs[0]], None), m)


def test_spectral_methods_average_vectors_and_embeddings() -> None:
    base = T([1.0, 1.0])
    xs = [T([3.0, 1.0]), T([1.0, 5.0])]
    for name in ("tsv", "iso_c", "iso_cts", "wudi"):
        close(call(name, xs, base, **{"lambda": 1.0} if name != "wudi" else {}),
              T([2.0, 3.0]))
    # a 2-D embedding is averaged too: the method receives the tensor's kind
    emb_base = torch.zeros(3, 2)
    embs = [torch.ones(3, 2), 3 * torch.ones(3, 2)]
    m = get_method("iso_c")
    assert m.wants_kind
    close(m(embs, emb_base, kind="embedding", lambda_=1.0), 2 * torch.ones(3, 2))
    assert not m(embs, emb_base, kind="mlp", lambda_=1.0).equal(2 * torch.ones(3, 2))


def test_consensus_drops_selfish_weights() -> None:
    base = torch.zeros(5)
    d1 = T([1.0, 0.1, 0.0, 2.0, 1.0])
    d2 = T([1.0, 0.0, 0.5, -2.0, 0.0])
    d3 = T([0.0, 0.1, 0.5, 0.1, 0.0])
    # TALL masks at threshold 0.5 (|d_t| >= 0.5 |sum - d_t|) vote 2, 2, 2, 3, 1 per element
    out = call("consensus_ta", [d1, d2, d3], base, tall_threshold=0.5, k=2)
    close(out, T([2.0, 0.2, 1.0, 0.1, 0.0]))
    out = call("consensus_ta", [d1, d2, d3], base, tall_threshold=0.5, k=3)
    close(out, T([0.0, 0.0, 0.0, 0.1, 0.0]))
    # k = 0 is plain task arithmetic
    close(call("consensus_ta", [d1, d2, d3], base, k=0, weight=[1.0, 0.5, 2.0]),
          d1 + 0.5 * d2 + 2 * d3)
    # on TIES: element 3 elects + (2 + 0.1 vs -2), so d2's -2 is dropped: (2 + 0.1) / 2
    out = call("consensus_ties", [d1, d2, d3], base, tall_threshold=0.5, k=3)
    close(out, T([0.0, 0.0, 0.0, 1.05, 0.0]))


def _wudi_reference(deltas: list[torch.Tensor], steps: int, lr: float) -> torch.Tensor:
    """The reference loop: autograd of the loss, Adam, from the task-arithmetic sum."""
    tvs = torch.stack(deltas)
    merged = torch.nn.Parameter(tvs.sum(dim=0))
    norms = tvs.reshape(len(deltas), -1).norm(dim=-1).square()
    opt = torch.optim.Adam([merged], lr=lr, weight_decay=0)
    for _ in range(steps):
        product = (merged.unsqueeze(0) - tvs) @ tvs.transpose(1, 2)
        loss = (product.square() / norms.view(-1, 1, 1)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return merged.detach()


def test_wudi_equals_the_reference_loop() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g, dtype=torch.float64)
    deltas = [torch.randn(6, 5, generator=g, dtype=torch.float64) * 0.1 for _ in range(3)]
    out = call("wudi", [base + d for d in deltas], base, steps=50, lr=1e-2)
    close(out, base + _wudi_reference(deltas, 50, 1e-2), tol=1e-9)

    def loss(m: torch.Tensor) -> float:
        return sum(float(((m - d) @ d.T).square().sum() / d.square().sum()) for d in deltas)

    assert loss(out - base) < 0.5 * loss(sum(deltas))  # interference reduced vs task arithmetic


def test_wudi_fixed_points() -> None:
    base = torch.zeros(3, 4)
    # one task: the start (its own task vector) already has zero loss
    d = T([[1.0, 2.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
    close(call("wudi", [d], base, steps=100, lr=0.1), d)
    # tasks acting on disjoint input coordinates never interfere: the sum is optimal
    d2 = T([[0.0, 0.0, 1.0, -1.0], [0.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 0.0]])
    close(call("wudi", [d, d2], base, steps=100, lr=0.1), d + d2)
