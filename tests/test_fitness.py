"""IRT parameter recovery on simulated data, estimators against their formulas computed here
independently, subset extraction."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import numpy as np
import pytest

from evomerge.errors import ConfigError
from evomerge.fitness import (
    IRTModel,
    Subset,
    correctness_anchors,
    fit_ability,
    fit_irt,
    fit_merge_weights,
    irt_anchors,
    make_estimator,
    random_subset,
    stratified_subset,
)
from evomerge.fitness.estimators import shrinkage
from evomerge.fitness.irt import read_tinybenchmarks


def simulate(kind: str, dims: int, subjects: int = 200, items: int = 1000, seed: int = 0):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(subjects, dims))
    a = rng.lognormal(0, 0.5, (items, dims)) if dims == 1 else rng.lognormal(-0.5, 0.5,
                                                                             (items, dims))
    b = rng.normal(size=items)
    p = 1 / (1 + np.exp(-(theta @ a.T - b)))
    return theta, a, b, (rng.random(p.shape) < p).astype(float)


def corr(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1])


def test_2pl_recovers_parameters_in_seconds() -> None:
    theta, a, b, y = simulate("2pl", 1)
    start = time.perf_counter()
    model, th = fit_irt(y, kind="2pl")
    assert time.perf_counter() - start < 60
    assert corr(model.b, b) >= 0.95
    assert corr(model.a[:, 0], a[:, 0]) >= 0.85
    assert corr(th[:, 0], theta[:, 0]) >= 0.95


def test_3d_mirt_recovers_parameters_up_to_a_linear_map() -> None:
    theta, a, b, y = simulate("mirt", 3, seed=1)
    start = time.perf_counter()
    model, th = fit_irt(y, kind="mirt", dims=3)
    assert time.perf_counter() - start < 60
    # abilities are identified up to an invertible linear map; align, then compare
    w = np.linalg.lstsq(th, theta, rcond=None)[0]
    th_aligned, a_aligned = th @ w, model.a @ np.linalg.inv(w).T
    assert corr(model.b, b) >= 0.95
    assert np.mean([corr(a_aligned[:, k], a[:, k]) for k in range(3)]) >= 0.85
    assert np.mean([corr(th_aligned[:, k], theta[:, k]) for k in range(3)]) >= 0.95


def test_missing_entries_and_1pl() -> None:
    theta, a, b, y = simulate("2pl", 1, subjects=150, items=300, seed=2)
    y[np.random.default_rng(0).random(y.shape) < 0.3] = np.nan
    model, th = fit_irt(y, kind="1pl")
    assert np.all(model.a == 1.0)
    assert corr(model.b, b) >= 0.9 and corr(th[:, 0], theta[:, 0]) >= 0.9


def test_ability_from_a_subset_and_merge_weights() -> None:
    theta, a, b, y = simulate("2pl", 1, subjects=50, items=800, seed=3)
    model = IRTModel(a=a, b=b)
    items = np.arange(0, 800, 4)
    est = fit_ability(model, y[:, items], items)
    assert corr(est[:, 0], theta[:, 0]) >= 0.9
    # a "merge" whose ability is 0.3 * theta_A + 0.7 * theta_B
    ends = np.array([[-1.5], [2.0]])
    true = 0.3 * ends[0] + 0.7 * ends[1]
    rng = np.random.default_rng(0)
    p = model.prob(true[None, :])
    merged = (rng.random((1, 800)) < p).astype(float)
    lam = fit_merge_weights(model, ends, merged, np.arange(800))
    assert (lam @ ends)[0] == pytest.approx(true, abs=0.15)
    assert np.all(lam >= 0)


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = IRTModel(a=np.random.default_rng(0).random((5, 2)), b=np.arange(5.0), kind="mirt")
    model.save(tmp_path / "irt")
    again = IRTModel.load(tmp_path / "irt")
    np.testing.assert_array_equal(again.a, model.a)
    np.testing.assert_array_equal(again.b, model.b)
    assert again.kind == "mirt" and (tmp_path / "irt.json").exists()


def test_tinybenchmarks_file_is_read_without_arbitrary_code(tmp_path: Path) -> None:
    a = np.random.default_rng(0).random((1, 3, 7))
    b = np.random.default_rng(1).random((1, 1, 7))
    data = {"irt_parameters": {"A": a, "B": b}, "seen_examples": np.arange(7) < 3,
            "examples_weights": {"mmlu": np.ones(3) / 3}, "optimal_lambdas": {"mmlu": 0.4},
            "scenarios_position": {"mmlu": list(range(7))}}
    path = tmp_path / "tinyBenchmarks.pkl"
    path.write_bytes(pickle.dumps(data))
    read = read_tinybenchmarks(path)
    assert read["optimal_lambdas"] == {"mmlu": 0.4}
    model = read["model"]
    np.testing.assert_array_equal(model.a, a[0].T)
    theta = np.array([[0.1, -0.2, 0.3]])

    def item_curve(theta: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """tinyBenchmarks' own function (tutorials/utils.py), D = 3 here."""
        z = np.clip(a * theta - b, -30, 30).sum(axis=1)
        return 1 / (1 + np.exp(-z))

    expected = item_curve(theta.reshape(1, 3, 1), a, b)
    np.testing.assert_allclose(model.prob(theta), expected)
    np.testing.assert_allclose(model.b, 3 * b.reshape(-1))  # the intercept is D * b
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(ConfigError("x")))
    with pytest.raises(ConfigError, match="refusing"):
        read_tinybenchmarks(evil)


@pytest.fixture
def hand_made():
    """Two items seen out of five, a fixed IRT model, two endpoint abilities."""
    model = IRTModel(a=np.array([[1.0], [0.5], [2.0], [1.0], [1.5]]),
                     b=np.array([0.0, -1.0, 0.5, 1.0, -0.5]))
    subset = Subset(items=np.array([1, 3]), weights=np.array([0.25, 0.75]), n_total=5)
    y = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    ends = np.array([[-1.0], [1.5]])
    return model, subset, y, ends


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def test_estimators_equal_their_formulas(hand_made) -> None:  # noqa: ANN001
    model, subset, y, ends = hand_made
    unseen = [0, 2, 4]
    weighted = y @ np.array([0.25, 0.75])
    np.testing.assert_allclose(make_estimator("mean", subset).estimate(y), y.mean(axis=1))
    np.testing.assert_allclose(make_estimator("weighted", subset).estimate(y), weighted)
    # p-IRT with the ability the estimator fits
    est = make_estimator("pirt", subset, irt=model)
    theta = fit_ability(model, y, subset.items)
    p_unseen = sigmoid(theta @ model.a[unseen].T - model.b[unseen]).mean(axis=1)
    pirt = 2 / 5 * weighted + 3 / 5 * p_unseen
    np.testing.assert_allclose(est.estimate(y), pirt)
    np.testing.assert_allclose(make_estimator("gpirt", subset, irt=model, lam=0.3).estimate(y),
                               0.3 * weighted + 0.7 * pirt)
    # mp-IRT: theta = lambda @ endpoint thetas
    lam = fit_merge_weights(model, ends, y, subset.items)
    th = lam @ ends
    mp_unseen = sigmoid(th @ model.a[unseen].T - model.b[unseen]).mean(axis=1)
    mpirt = 2 / 5 * weighted + 3 / 5 * mp_unseen
    np.testing.assert_allclose(make_estimator("mpirt", subset, irt=model, endpoint_thetas=ends)
                               .estimate(y), mpirt)
    np.testing.assert_allclose(make_estimator("gmpirt", subset, irt=model, endpoint_thetas=ends)
                               .estimate(y), 0.5 * weighted + 0.5 * mpirt)


def test_automatic_mixing_weight(hand_made) -> None:  # noqa: ANN001
    model, subset, _, ends = hand_made
    calib = np.array([[1, 1, 0, 0, 1], [0, 1, 1, 0, 1], [1, 0, 0, 1, 0], [1, 1, 1, 1, 0.0]])
    est = make_estimator("gmpirt", subset, irt=model, endpoint_thetas=ends, delta="auto",
                    calibration=calib)
    sub = calib[:, subset.items]
    weighted = sub @ subset.weights
    mp = make_estimator("mpirt", subset, irt=model, endpoint_thetas=ends).estimate(sub)
    bias = np.mean(np.abs(mp - calib.mean(axis=1)))
    var = np.mean(sub.var(axis=1))
    delta = bias**2 / (bias**2 + var / (4 * 2))
    assert shrinkage(bias, var, 2) == pytest.approx(delta)
    np.testing.assert_allclose(est.estimate(sub), delta * weighted + (1 - delta) * mp)
    # missing answers (NaN, as in a user response matrix): rows missing a subset item are
    # left out, the others' truth is the mean of the answers they have
    holey = np.vstack([calib, np.full(5, np.nan)])
    holey[0, [i for i in range(5) if i not in subset.items][0]] = np.nan
    with_nan = make_estimator("gmpirt", subset, irt=model, endpoint_thetas=ends, delta="auto",
                         calibration=holey)
    out = with_nan.estimate(sub)
    assert np.all(np.isfinite(out))
    truth = np.nanmean(holey[:4], axis=1)
    bias = np.mean(np.abs(mp - truth))
    delta = shrinkage(bias, var, 2)
    np.testing.assert_allclose(out, delta * weighted + (1 - delta) * mp)


def test_estimator_errors(hand_made) -> None:  # noqa: ANN001
    model, subset, y, _ = hand_made
    with pytest.raises(ConfigError, match="needs a fitted IRT"):
        make_estimator("pirt", subset)
    with pytest.raises(ConfigError, match="endpoint"):
        make_estimator("mpirt", subset, irt=model)
    with pytest.raises(ConfigError, match="expected 2 answers"):
        make_estimator("mean", subset).estimate(np.ones((1, 3)))


def test_extraction_is_seeded_and_valid() -> None:
    a = random_subset(100, 10, seed=4)
    assert a.items.tolist() == random_subset(100, 10, seed=4).items.tolist()
    assert a.items.tolist() != random_subset(100, 10, seed=5).items.tolist()
    strata = ["en"] * 60 + ["it"] * 30 + ["de"] * 10
    s = stratified_subset(strata, 10, seed=0)
    picked = [strata[i] for i in s.items]
    assert picked.count("en") == 6 and picked.count("it") == 3 and picked.count("de") == 1
    assert np.isclose(s.weights.sum(), 1.0)
    np.testing.assert_allclose(sorted({round(w, 6) for w in s.weights}), [0.1])
    theta, a_true, b_true, y = simulate("2pl", 1, subjects=40, items=300, seed=5)
    model = IRTModel(a=a_true, b=b_true)
    anchors = irt_anchors(model, 12, seed=0)
    assert len(set(anchors.items.tolist())) == 12 and np.isclose(anchors.weights.sum(), 1)
    assert anchors.items.tolist() == irt_anchors(model, 12, seed=0).items.tolist()
    ca = correctness_anchors(y, 8, seed=0)
    assert len(ca.items) == 8 and ca.n_total == 300
    restored = Subset.from_json(ca.to_json())
    np.testing.assert_array_equal(restored.items, ca.items)
    with pytest.raises(ConfigError, match="between 1 and"):
        random_subset(5, 6)


def test_ability_prior_none_is_tinybenchmarks_maximum_likelihood() -> None:
    """With ``ability_prior: none`` p-IRT's ability is tinyBenchmarks' own: their fit_theta
    (scipy BFGS on the plain negative log-likelihood, tutorials/utils.py), D = 2."""
    import math

    from scipy.optimize import minimize

    from evomerge.fitness import make_estimator
    from evomerge.fitness.extraction import Subset
    from evomerge.fitness.irt import IRTModel, fit_ability

    rng = np.random.default_rng(4)
    d, n = 2, 40
    a = rng.uniform(0.3, 1.5, (1, d, n))
    b = rng.normal(0, 1, (1, 1, n))
    model = IRTModel(a=a[0].T, b=d * b.reshape(-1), kind="mirt")  # as read_tinybenchmarks
    seen = np.arange(0, n, 2)
    y = (rng.random(len(seen)) < 0.6).astype(float)

    def item_curve(theta: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        z = np.clip(a * theta - b, -30, 30).sum(axis=1)
        return 1 / (1 + np.exp(-z))

    def neg_log_like(x: np.ndarray) -> float:  # their fit_theta's objective
        p = item_curve(x.reshape(1, d, 1), a[:, :, seen], b[:, :, seen]).squeeze()
        return -float(np.sum(y * np.log(p + 1e-10) + (1 - y) * np.log(1 - p + 1e-10)))

    theirs = minimize(neg_log_like, np.zeros(d), method="BFGS", tol=1e-10).x
    ours = fit_ability(model, y, seen, prior=math.inf, steps=300)[0]
    np.testing.assert_allclose(ours, theirs, atol=2e-3)
    with_prior = fit_ability(model, y, seen)[0]
    assert np.linalg.norm(with_prior) < np.linalg.norm(theirs)  # N(0, 1) shrinks it
    subset = Subset(items=seen, weights=np.full(len(seen), 1 / len(seen)), n_total=n,
                    method="random", seed=0)
    est = make_estimator("pirt", subset, irt=model, ability_prior=math.inf).estimate(y)[0]
    unseen = np.setdiff1d(np.arange(n), seen)
    expected = 0.5 * y.mean() + 0.5 * item_curve(theirs.reshape(1, d, 1), a[:, :, unseen],
                                                 b[:, :, unseen]).mean()
    assert est == pytest.approx(expected, abs=1e-3)
