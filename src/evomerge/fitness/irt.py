"""Item Response Theory: 1PL, 2PL and multidimensional 2PL, fitted by MAP in torch.

p_ij = sigmoid(a_i . theta_j - b_i). Priors: theta ~ N(0, I), b ~ N(0, s_b^2), and for the
discriminations log a ~ N(0, s_a^2) in one dimension (a > 0 keeps the scale identified) or
a ~ N(0, s_a^2) per component in several. Responses are a subjects x items matrix of 0/1
with NaN for missing entries. Fitting is full-batch L-BFGS: 1000 items x 200 subjects takes
seconds on a CPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from evomerge.errors import ConfigError

Kind = Literal["1pl", "2pl", "mirt"]


@dataclass
class IRTModel:
    """Fitted item parameters: ``a`` (items x dims) and ``b`` (items)."""

    a: np.ndarray
    b: np.ndarray
    kind: Kind = "2pl"
    prior_theta: float = 1.0

    @property
    def dims(self) -> int:
        return int(self.a.shape[1])

    @property
    def n_items(self) -> int:
        return int(self.b.shape[0])

    def prob(self, theta: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """P(correct) for abilities ``theta`` (subjects x dims) on ``items`` (default all)."""
        a = self.a if items is None else self.a[items]
        b = self.b if items is None else self.b[items]
        theta = np.atleast_2d(theta)
        return 1.0 / (1.0 + np.exp(-(theta @ a.T - b)))

    def save(self, path: str | Path) -> None:
        """``path`` + .npz (arrays) and .json (metadata)."""
        p = Path(path)
        np.savez(p.with_suffix(".npz"), a=self.a, b=self.b)
        p.with_suffix(".json").write_text(json.dumps(
            {"kind": self.kind, "dims": self.dims, "n_items": self.n_items,
             "prior_theta": self.prior_theta}, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> IRTModel:
        p = Path(path)
        meta = json.loads(p.with_suffix(".json").read_text())
        with np.load(p.with_suffix(".npz"), allow_pickle=False) as arrays:
            return cls(a=arrays["a"], b=arrays["b"], kind=meta["kind"],
                       prior_theta=meta.get("prior_theta", 1.0))


def _as_tensor(responses: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.as_tensor(np.asarray(responses, dtype=np.float64))
    mask = ~torch.isnan(y)
    return torch.nan_to_num(y, nan=0.0), mask.to(torch.float64)


def _bernoulli_loglik(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return -(torch.nn.functional.binary_cross_entropy_with_logits(
        logits, y, reduction="none") * mask).sum()


def _lbfgs(params: list[torch.Tensor], loss_fn, steps: int) -> None:  # noqa: ANN001
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=steps, tolerance_grad=1e-7,
                            tolerance_change=1e-10, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)


def fit_irt(responses: np.ndarray, kind: Kind = "2pl", dims: int = 1, *, prior_b: float = 3.0,
            prior_a: float = 1.0, steps: int = 500, seed: int = 0
            ) -> tuple[IRTModel, np.ndarray]:
    """Fit item parameters and subject abilities jointly (MAP). Returns (model, thetas)."""
    y, mask = _as_tensor(responses)
    if y.dim() != 2:
        raise ConfigError("responses must be a subjects x items matrix")
    if kind != "mirt":
        dims = 1
    n_subjects, n_items = y.shape
    gen = torch.Generator().manual_seed(seed)
    theta = (0.1 * torch.randn(n_subjects, dims, generator=gen, dtype=torch.float64)
             ).requires_grad_()
    b = torch.zeros(n_items, dtype=torch.float64, requires_grad=True)
    raw_a = (0.1 * torch.randn(n_items, dims, generator=gen, dtype=torch.float64)
             + (0.5 if kind == "mirt" else 0.0)).requires_grad_()

    def discrimination() -> torch.Tensor:
        if kind == "1pl":
            return torch.ones(n_items, 1, dtype=torch.float64)
        if kind == "2pl":
            return torch.exp(raw_a)
        return raw_a

    def loss() -> torch.Tensor:
        a = discrimination()
        nll = -_bernoulli_loglik(theta @ a.T - b, y, mask)
        prior = 0.5 * (theta ** 2).sum() + 0.5 * (b ** 2).sum() / prior_b ** 2
        if kind != "1pl":
            prior = prior + 0.5 * (raw_a ** 2).sum() / prior_a ** 2
        return nll + prior

    params = [theta, b] + ([raw_a] if kind != "1pl" else [])
    _lbfgs(params, loss, steps)
    with torch.no_grad():
        a = discrimination().numpy().copy()
    return IRTModel(a=a, b=b.detach().numpy().copy(), kind=kind), theta.detach().numpy().copy()


def fit_ability(model: IRTModel, responses: np.ndarray, items: np.ndarray, *,
                prior: float | None = None, steps: int = 100) -> np.ndarray:
    """MAP ability of each subject (rows of ``responses``) from its answers on ``items``."""
    y, mask = _as_tensor(np.atleast_2d(responses))
    a = torch.as_tensor(model.a[items])
    b = torch.as_tensor(model.b[items])
    theta = torch.zeros(y.shape[0], model.dims, dtype=torch.float64, requires_grad=True)
    scale = prior if prior is not None else model.prior_theta

    def loss() -> torch.Tensor:
        return -_bernoulli_loglik(theta @ a.T - b, y, mask) + 0.5 * (theta ** 2).sum() / scale**2

    _lbfgs([theta], loss, steps)
    return theta.detach().numpy().copy()


def fit_merge_weights(model: IRTModel, endpoint_thetas: np.ndarray, responses: np.ndarray,
                      items: np.ndarray, *, steps: int = 100, ridge: float = 1e-3
                      ) -> np.ndarray:
    """mp-IRT: for each candidate (rows of ``responses``), non-negative lambda such that
    theta = sum_j lambda_j theta_j maximises the likelihood of its answers on ``items``.
    Returns lambdas (candidates x endpoints)."""
    y, mask = _as_tensor(np.atleast_2d(responses))
    a = torch.as_tensor(model.a[items])
    b = torch.as_tensor(model.b[items])
    ends = torch.as_tensor(np.atleast_2d(endpoint_thetas))
    n_ends = ends.shape[0]
    # start from the equal mixture; softplus keeps lambda >= 0
    raw = torch.full((y.shape[0], n_ends), float(np.log(np.expm1(1.0 / n_ends))),
                     dtype=torch.float64, requires_grad=True)

    def loss() -> torch.Tensor:
        lam = torch.nn.functional.softplus(raw)
        theta = lam @ ends
        return -_bernoulli_loglik(theta @ a.T - b, y, mask) + ridge * (lam ** 2).sum()

    _lbfgs([raw], loss, steps)
    return torch.nn.functional.softplus(raw).detach().numpy().copy()


def read_tinybenchmarks(path: str | Path) -> dict[str, object]:
    """Read tinyBenchmarks' parameter file (a pickle of numpy arrays and dicts) without
    executing arbitrary code: only numpy arrays and builtin containers are allowed.

    Returns its keys (``irt_parameters`` with ``A`` (1 x dims x items) and ``B``
    (1 x 1 x items), ``seen_examples``, ``examples_weights``, ``optimal_lambdas``,
    ``scenarios_position``) plus ``model``: an ``IRTModel`` over all items."""
    import pickle

    allowed = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("builtins", "dict"), ("builtins", "list"),
               ("collections", "OrderedDict")}

    class SafeUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> object:
            if (module, name) not in allowed:
                raise ConfigError(f"{path}: refusing to load {module}.{name} from a pickle")
            return super().find_class(module, name)

    with open(path, "rb") as f:
        data = SafeUnpickler(f).load()
    if not isinstance(data, dict) or "irt_parameters" not in data:
        raise ConfigError(f"{path} is not a tinyBenchmarks parameter file")
    params = data["irt_parameters"]
    a = np.asarray(params["A"])[0].T  # items x dims
    b = np.asarray(params["B"]).reshape(-1)
    # tinyBenchmarks' item_curve sums clip(a_d * theta_d - b) over the D dimensions, B
    # (1 x 1 x items) broadcast to each: the intercept is D * b (their clip at +-30 per term
    # only matters at probabilities within 1e-13 of 0 or 1)
    data["model"] = IRTModel(a=a, b=a.shape[1] * b, kind="mirt" if a.shape[1] > 1 else "2pl")
    return data
