"""Spectral merges of 2-D weight matrices: TSV-Merge, Iso-C, Iso-CTS and CART.

Each works on the singular vectors of task matrices (x_i - base, or x_i - mean for CART).
Vectors (norms, biases) and the embedding and output head are not linear maps between hidden
spaces and their SVD over the vocabulary is costly, so, as the papers' LLM code does, they
get the mean of the task vectors instead (times ``lambda``, like the matrices)."""

from __future__ import annotations

from typing import Annotated

import torch

from evomerge.merge.registry import Param, merge_method

Lambda = Annotated[float, Param(help="scale of the merged task vector (alpha in the papers)")]
NOT_MATRIX = ("embedding", "head")


def is_matrix(t: torch.Tensor, kind: str | None) -> bool:
    """Whether a spectral method treats this tensor as a linear map."""
    return t.dim() == 2 and kind not in NOT_MATRIX and min(t.shape) > 1


def orthogonal_factor(a: torch.Tensor) -> torch.Tensor:
    """The nearest matrix with orthonormal columns (rows, if wide): P Q^T for a = P S Q^T."""
    p, _, q = torch.linalg.svd(a, full_matrices=False)
    return p @ q


def _mean_delta(tensors: list[torch.Tensor], base: torch.Tensor) -> torch.Tensor:
    return torch.stack([x - base for x in tensors]).mean(dim=0)


@merge_method("tsv", base="required", reference="https://arxiv.org/abs/2412.00081")
def tsv(tensors: list[torch.Tensor], base: torch.Tensor, *, lambda_: Lambda = 1.0,
        kind: str | None = None) -> torch.Tensor:
    """TSV-Merge (Gargiulo et al., CVPR 2025). Per matrix, with T task matrices d_i =
    U_i S_i V_i^T and k = min(rows, cols): keep each task's top r = floor(k / T) singular
    triplets, stack them into U = [U_1,r .. U_T,r], S = diag(S_1,r .. S_T,r), V = [V_1,r ..
    V_T,r], replace U and V by their orthogonal factors (removing the interference between
    tasks' subspaces), result = base + lambda U_perp S V_perp^T. With r = 0 (a matrix smaller
    than the number of tasks) the matrix gets the mean task vector."""
    k = min(base.shape) if base.dim() == 2 else 0
    r = k // len(tensors)
    if not is_matrix(base, kind) or r == 0:
        return base + lambda_ * _mean_delta(tensors, base)
    us, ss, vs = [], [], []
    for x in tensors:
        u, s, v = torch.linalg.svd(x - base, full_matrices=False)
        us.append(u[:, :r])
        ss.append(s[:r])
        vs.append(v[:r])
    u = orthogonal_factor(torch.cat(us, dim=1))
    v = orthogonal_factor(torch.cat(vs, dim=0))
    return base + lambda_ * (u * torch.cat(ss)) @ v


@merge_method("iso_c", base="required", reference="https://arxiv.org/abs/2502.04959")
def iso_c(tensors: list[torch.Tensor], base: torch.Tensor, *, lambda_: Lambda = 1.0,
          kind: str | None = None) -> torch.Tensor:
    """Iso-C (Marczak et al., ICML 2025): the task-arithmetic sum D = sum_i d_i = U S V^T is
    made isotropic, every singular value replaced by their mean: result = base + lambda
    mean(S) U V^T. Directions that few tasks use are no longer drowned by dominant ones."""
    if not is_matrix(base, kind):
        return base + lambda_ * _mean_delta(tensors, base)
    total = torch.stack([x - base for x in tensors]).sum(dim=0)
    u, s, v = torch.linalg.svd(total, full_matrices=False)
    return base + lambda_ * s.mean() * (u @ v)


@merge_method("iso_cts", base="required", reference="https://arxiv.org/abs/2502.04959")
def iso_cts(tensors: list[torch.Tensor], base: torch.Tensor, *, lambda_: Lambda = 1.0,
            common_space_fraction: Annotated[float, Param(
                low=0.0, high=1.0, help="share of the rank given to the common subspace")] = 0.8,
            kind: str | None = None) -> torch.Tensor:
    """Iso-CTS (Marczak et al., ICML 2025): the top c singular directions of the summed task
    matrix (the common subspace, c about ``common_space_fraction`` of the rank k, rounded so
    that k - c splits evenly over the T tasks) plus, per task, the top (k - c) / T directions
    of d_i with the common subspace projected out (d_i - U_c U_c^T d_i); the stacked U and V
    are orthogonalised as in TSV and all singular values set to their mean."""
    if not is_matrix(base, kind):
        return base + lambda_ * _mean_delta(tensors, base)
    deltas = [x - base for x in tensors]
    k, n = min(base.shape), len(deltas)
    common = int(k * common_space_fraction)
    common = k - round((k - common) / n) * n
    per_task = (k - common) // n
    u, s, v = torch.linalg.svd(torch.stack(deltas).sum(dim=0), full_matrices=False)
    us, ss, vs = [], [], []
    if per_task > 0:
        proj = u[:, :common]
        for d in deltas:
            tu, ts, tv = torch.linalg.svd(d - proj @ (proj.T @ d), full_matrices=False)
            us.append(tu[:, :per_task])
            ss.append(ts[:per_task])
            vs.append(tv[:per_task])
    us.append(u[:, :common])
    ss.append(s[:common])
    vs.append(v[:common])
    uo = orthogonal_factor(torch.cat(us, dim=1))
    vo = orthogonal_factor(torch.cat(vs, dim=0))
    return base + lambda_ * torch.cat(ss).mean() * (uo @ vo)


@merge_method("cart", base="input", min_models=2, reference="https://arxiv.org/abs/2412.12153")
def cart(tensors: list[torch.Tensor], base: torch.Tensor | None, *, lambda_: Lambda = 1.0,
         rank_fraction: Annotated[float, Param(low=0.0, high=1.0, help="share of each centred "
                                               "task matrix's rank kept")] = 0.1,
         kind: str | None = None) -> torch.Tensor:
    """CART (Choi et al. 2024, centred arithmetic with rank reduction): around the average
    m = mean_i x_i, result = m + lambda sum_i SVD_r(x_i - m), SVD_r the best rank-r
    approximation, r = max(1, round(rank_fraction * min(rows, cols))). Vectors, embeddings
    and the head get the plain average (their centred sum is zero)."""
    mean = torch.stack(tensors).mean(dim=0)
    if not is_matrix(mean, kind):
        return mean
    r = max(1, round(rank_fraction * min(mean.shape)))
    out = torch.zeros_like(mean)
    for x in tensors:
        u, s, v = torch.linalg.svd(x - mean, full_matrices=False)
        out += (u[:, :r] * s[:r]) @ v[:r]
    return mean + lambda_ * out
