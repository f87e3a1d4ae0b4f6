"""Each merge method against its formula on hand-made tensors; registry and parameters."""

from __future__ import annotations

import math
from typing import Annotated

import pytest
import torch

from evomerge.errors import ConfigError
from evomerge.merge import sparsify
from evomerge.merge.params import evaluate_setting
from evomerge.merge.registry import Param, get_method, merge_method, methods
from evomerge.recipe import ConditionalParameter

T = torch.tensor


def call(name: str, tensors: list[torch.Tensor], base: torch.Tensor | None = None,
         **params: object) -> torch.Tensor:
    m = get_method(name)
    full = {}
    for spec in m.params():
        value = params.get(spec.name, spec.default)
        if spec.meta.per_model and not isinstance(value, list):
            value = [value] * len(tensors)
        full[spec.arg] = value
    gen = torch.Generator().manual_seed(0) if m.stochastic else None
    return m(tensors, base, generator=gen, **full)


def test_all_issue_methods_are_registered() -> None:
    assert set(methods()) >= {"linear", "task_arithmetic", "ties", "dare_linear", "dare_ties",
                              "breadcrumbs", "breadcrumbs_ties", "della", "della_linear",
                              "slerp", "nuslerp", "model_stock", "passthrough", "sce", "karcher",
                              "multislerp", "nearswap", "arcee_fusion", "ram", "ramplus_tl"}


def test_linear() -> None:
    out = call("linear", [T([1.0, 2.0]), T([3.0, 6.0])], weight=[0.25, 0.75])
    torch.testing.assert_close(out, T([2.5, 5.0]))
    out = call("linear", [T([1.0, 2.0]), T([3.0, 6.0])], weight=[1.0, 1.0], normalize=False)
    torch.testing.assert_close(out, T([4.0, 8.0]))


def test_task_arithmetic() -> None:
    base = T([1.0, 1.0, 1.0])
    out = call("task_arithmetic", [T([2.0, 1.0, 0.0]), T([1.0, 3.0, 1.0])], base,
               weight=[1.0, 0.5], **{"lambda": 2.0})
    # base + 2 * (1*[1,0,-1] + 0.5*[0,2,0])
    torch.testing.assert_close(out, T([3.0, 3.0, -1.0]))


def test_ties_trims_elects_and_takes_disjoint_mean() -> None:
    base = torch.zeros(4)
    a = T([4.0, -1.0, 0.5, -3.0])
    b = T([2.0, 3.0, -0.2, -1.0])
    out = call("ties", [a, b], base, weight=[1.0, 1.0], density=[0.5, 0.5])
    # trimmed: a -> [4, 0, 0, -3], b -> [2, 3, 0, 0]; signs: +, +, (0 -> +), -
    # element 0: both agree -> mean 3; 1: only b -> 3; 2: nothing -> 0; 3: only a -> -3
    torch.testing.assert_close(out, T([3.0, 3.0, 0.0, -3.0]))


def test_ties_sign_election_drops_the_minority() -> None:
    out = call("ties", [T([2.0]), T([-1.0]), T([0.5])], torch.zeros(1), weight=[1.0, 1.0, 1.0])
    # weighted sum 1.5 > 0: keep +2 and +0.5, mean over their weights
    torch.testing.assert_close(out, T([1.25]))


def test_magnitude_and_outlier_sparsification() -> None:
    x = T([0.1, -5.0, 0.3, 2.0, -0.2, 1.0, 0.05, -0.4, 3.0, 0.6])
    kept = sparsify.magnitude(x, 0.3)
    assert torch.equal(kept != 0, x.abs() >= 2.0)
    # breadcrumbs: drop top 10% (-5.0), then smallest so 40% remain: 3, 2, 1, 0.6
    kept = sparsify.magnitude_outliers(x, 0.4, 0.1)
    assert sorted(kept[kept != 0].abs().tolist()) == pytest.approx([0.6, 1.0, 2.0, 3.0])
    rescaled = sparsify.magnitude(x, 0.3, rescale=True)
    assert rescaled.abs().sum().item() == pytest.approx(x.abs().sum().item())


def test_dare_keeps_density_and_rescales_unbiased() -> None:
    x = torch.ones(200_000)
    gen = torch.Generator().manual_seed(3)
    out = sparsify.bernoulli(x, 0.2, rescale=True, generator=gen)
    assert (out != 0).float().mean().item() == pytest.approx(0.2, abs=0.005)
    assert set(out.unique().tolist()) == {0.0, 5.0}
    assert out.mean().item() == pytest.approx(1.0, abs=0.02)


def test_della_keep_probability_rises_with_rank() -> None:
    x = torch.arange(1, 100_001, dtype=torch.float32).reshape(1, -1)
    gen = torch.Generator().manual_seed(0)
    out = sparsify.della_magprune(x, 0.5, 0.3, rescale=False, generator=gen)
    keep = (out != 0).float().reshape(10, -1).mean(dim=1)  # deciles of magnitude
    expected = torch.tensor([0.2 + 0.6 * (i + 0.5) / 10 for i in range(10)])
    torch.testing.assert_close(keep, expected, atol=0.015, rtol=0)


def test_slerp_endpoints_and_great_circle() -> None:
    a, b = T([1.0, 0.0]), T([0.0, 1.0])
    torch.testing.assert_close(call("slerp", [b], a, t=0.0), a)
    torch.testing.assert_close(call("slerp", [b], a, t=1.0), b)
    mid = call("slerp", [b], a, t=0.5)
    torch.testing.assert_close(mid, T([math.sqrt(0.5), math.sqrt(0.5)]))
    # nearly parallel: plain lerp
    c = T([1.0, 1e-6])
    torch.testing.assert_close(call("slerp", [c], a, t=0.5), (a + c) / 2)


def test_nuslerp_weights_pick_t() -> None:
    a, b = T([1.0, 0.0]), T([0.0, 1.0])
    out = call("nuslerp", [a, b], None, weight=[1.0, 3.0])
    theta = math.pi / 2
    expect = T([math.sin(0.25 * theta), math.sin(0.75 * theta)]) / math.sin(theta)
    torch.testing.assert_close(out, expect)


def test_model_stock_formula() -> None:
    base = torch.zeros(3)
    x1, x2 = T([1.0, 0.0, 0.0]), T([1.0, 1.0, 0.0])
    cos = 1 / math.sqrt(2)
    t = 2 * cos / (1 + cos)
    torch.testing.assert_close(call("model_stock", [x1, x2], base), t * (x1 + x2) / 2)


def test_passthrough_scales() -> None:
    torch.testing.assert_close(call("passthrough", [T([2.0])], scale=[0.5]), T([1.0]))
    torch.testing.assert_close(call("passthrough", [T([2.0])]), T([2.0]))


def test_registry_discovers_parameters_from_signature() -> None:
    ties = get_method("ties")
    shared = {p.name: p for p in ties.shared}
    per_model = {p.name: p for p in ties.per_model}
    assert set(per_model) == {"weight", "density"} and per_model["weight"].required
    assert shared["lambda"].default == 1.0 and shared["normalize"].default is True
    assert per_model["density"].meta.high == 1.0
    assert get_method("dare_ties").stochastic and not ties.stochastic
    with pytest.raises(ConfigError, match="out of range"):
        per_model["density"].validate(-0.1)
    with pytest.raises(ConfigError, match="unknown merge method"):
        get_method("nope")


def test_adding_a_method_is_one_decorated_function() -> None:
    @merge_method("test_halfway", base="required", max_models=1)
    def halfway(tensors: list[torch.Tensor], base: torch.Tensor, *,
                amount: Annotated[float, Param(low=0, high=1)] = 0.5) -> torch.Tensor:
        return base + amount * (tensors[0] - base)

    try:
        m = get_method("test_halfway")
        assert [p.name for p in m.shared] == ["amount"]
        torch.testing.assert_close(m([T([2.0])], T([0.0]), amount=0.25), T([0.5]))
    finally:
        from evomerge.merge import registry

        registry._REGISTRY.pop("test_halfway")


def num(v: object) -> float:
    return float(v)  # type: ignore[arg-type]


def test_gradients_interpolate_over_layer_position() -> None:
    assert evaluate_setting("x", [0.0, 1.0], 0.25, num) == pytest.approx(0.25)
    assert evaluate_setting("x", [0.0, 1.0, 0.0], 0.75, num) == pytest.approx(0.5)
    assert evaluate_setting("x", [0.2, 0.4, 0.6], 1.0, num) == pytest.approx(0.6)
    assert evaluate_setting("x", ["a", "b"], 0.9, str) == "a"  # non-numeric: floor index


def test_filters_first_match_wins_and_fall_through() -> None:
    setting = [ConditionalParameter(filter="self_attn", value=0.1),
               ConditionalParameter(filter="mlp", value=[0.0, 1.0]),
               ConditionalParameter(value=0.9)]
    assert evaluate_setting("model.layers.0.self_attn.q_proj.weight", setting, 0.0, num) == 0.1
    assert evaluate_setting("model.layers.3.mlp.up_proj.weight", setting, 0.5, num) == 0.5
    assert evaluate_setting("model.norm.weight", setting, 0.0, num) == 0.9
    only_attn = [ConditionalParameter(filter="self_attn", value=0.1)]
    assert evaluate_setting("model.norm.weight", only_attn, 0.0, num) is None


def test_nearswap_hand_computed() -> None:
    """w = clamp(t / max(|a - b|, 1e-6), 0, 1): distances 1, 0 and 2 with t = 0.5 give
    weights 0.5, 1 and 0.25 towards the other model."""
    from evomerge.merge.registry import get_method

    a = torch.tensor([0.0, 0.5, 2.0])
    b = torch.tensor([1.0, 0.5, 0.0])
    out = get_method("nearswap")([b], a, t=0.5)
    torch.testing.assert_close(out, torch.tensor([0.5, 0.5, 1.5]))
    assert get_method("nearswap")([b], a, t=0.0).equal(a)  # t = 0 keeps the base


def _angle(v: torch.Tensor) -> float:
    return math.degrees(math.atan2(float(v[1]), float(v[0])))


def test_karcher_is_the_geodesic_mean_not_the_chordal_one() -> None:
    # directions at 0, 60 and 90 degrees with norms 1, 2, 3: on the circle the Karcher
    # (geodesic) mean is the mean angle, 50 degrees; the normalised Euclidean mean of the unit
    # vectors would be atan2(1.866, 1.5) = 51.21 degrees. The norm is the mean norm, 2.
    pts = [T([1.0, 0.0]), 2 * T([0.5, math.sqrt(3) / 2]), T([0.0, 3.0])]
    out = call("karcher", pts, max_iter=50, tol=1e-9)
    assert _angle(out) == pytest.approx(50.0, abs=1e-4)
    assert float(out.norm()) == pytest.approx(2.0, abs=1e-5)
    # two orthogonal vectors: the midpoint direction, scaled to the mean norm
    out = call("karcher", [T([2.0, 0.0]), T([0.0, 4.0])])
    assert out.tolist() == pytest.approx([3 / math.sqrt(2), 3 / math.sqrt(2)], abs=1e-5)
    # a zero input keeps its share of the norm but has no direction
    out = call("karcher", [T([2.0, 0.0]), T([0.0, 0.0])])
    assert out.tolist() == pytest.approx([1.0, 0.0], abs=1e-6)


def test_multislerp_weighted_direction_and_norm() -> None:
    # task vectors (2, 0) and (0, 4) from base (1, 1), weights 1 and 3 (normalised to 1/4,
    # 3/4): direction normalize(1/4 e1 + 3/4 e2) = (1, 3) / sqrt(10), norm 1/4*2 + 3/4*4 = 3.5
    base = T([1.0, 1.0])
    out = call("multislerp", [base + T([2.0, 0.0]), base + T([0.0, 4.0])], base,
               weight=[1.0, 3.0])
    expect = T([1.0, 3.0]) / math.sqrt(10) * 3.5 + base
    assert out.tolist() == pytest.approx(expect.tolist(), abs=1e-6)
    # without normalisation the weights scale the norm: (1*2 + 3*4) = 14
    out = call("multislerp", [T([2.0, 0.0]), T([0.0, 4.0])], weight=[1.0, 3.0],
               normalize_weights=False)
    assert float(out.norm()) == pytest.approx(14.0, rel=1e-6)
    # antipodal inputs with balancing weights: two models interpolate, three are refused
    out = call("multislerp", [T([1.0, 0.0]), T([-1.0, 0.0])], weight=[0.5, 0.5])
    assert out.tolist() == [0.0, 0.0]
    # a tensor no model changed stays the base (mergekit 0.1.5 raises for 3+ models)
    base3 = T([0.5, -1.0])
    assert call("multislerp", [base3, base3, base3], base3,
                weight=[1.0, 1.0, 1.0]).tolist() == [0.5, -1.0]
    with pytest.raises(ConfigError, match="cancel out"):
        call("multislerp", [T([1.0, 0.0]), T([-1.0, 0.0]), T([0.0, 0.0])],
             weight=[0.5, 0.5, 0.0])


def test_sce_selects_by_variance_weights_by_energy_and_erases_signs() -> None:
    base = T([0.0, 0.0, 0.0, 0.0])
    d1 = T([4.0, 1.0, -1.0, 0.5])
    d2 = T([2.0, 1.0, 3.0, -0.5])
    # energies mean(d^2): 18.25/4 and 14.25/4 -> weights 18.25/32.5, 14.25/32.5
    w1, w2 = 18.25 / 32.5, 14.25 / 32.5
    out = call("sce", [base + d1, base + d2], base)
    # element 0: both +; element 1: both +; element 2: sum +2 elects +, only d2 kept;
    # element 3: sum 0 elects +, only d1 kept
    assert out.tolist() == pytest.approx([(w1 * 4 + w2 * 2) / (w1 + w2), 1.0, 3.0, 0.5],
                                         abs=1e-6)
    # variances across models 1, 0, 4, 0.25: select_topk 0.7 keeps int(0.7 * 3 nonzero) = 2,
    # elements 2 and 0; the energies are taken after selection
    out = call("sce", [base + d1, base + d2], base, select_topk=0.7)
    e1, e2 = (16 + 1) / 4, (4 + 9) / 4
    v1, v2 = e1 / (e1 + e2), e2 / (e1 + e2)
    assert out.tolist() == pytest.approx([(v1 * 4 + v2 * 2) / (v1 + v2), 0.0, 3.0, 0.0],
                                         abs=1e-6)


def test_ram_keeps_unique_and_averages_shared_changes() -> None:
    base = T([1.0, 1.0, 1.0, 1.0])
    x1 = base + T([0.4, 0.2, 0.0, 1e-6])
    x2 = base + T([0.0, 0.6, 0.0, 0.3])
    out = call("ram", [x1, x2], base, epsilon=1e-5)
    # unique to x1, shared (mean), untouched, x1's change below epsilon so only x2 counts
    assert out.tolist() == pytest.approx([1.4, 1.4, 1.0, 1.3], abs=1e-6)
    # RAM+: x1 changed 2 elements, 1 shared and 1 unique -> rho 1 -> lambda 1 + 0.1*min(1, .2)
    # x2 changed 2, 1 shared 1 unique -> the same; unique elements scaled by 1.02
    out = call("ramplus_tl", [x1, x2], base, r=0.1, alpha=0.2, epsilon=1e-5)
    assert out.tolist() == pytest.approx([1 + 0.4 * 1.02, 1.4, 1.0, 1 + 0.3 * 1.02], abs=1e-6)
    # a model with no unique change has rho = shared / eps, clamped to alpha
    out = call("ramplus_tl", [base + T([0.2, 0.2, 0, 0]), base + T([0.4, 0.4, 0.4, 0])], base,
               r=0.5, alpha=0.2, epsilon=1e-5)
    assert out.tolist() == pytest.approx([1.3, 1.3, 1 + 0.4 * (1 + 0.5 * 0.2), 1.0],
                                         abs=1e-6)


def test_arcee_fusion_takes_only_outlying_important_changes() -> None:
    # one row of 9 elements: the base is flat, the other model moves one element far and the
    # rest slightly; the KL term is one number per row, so importance ranks |delta| and only
    # the element beyond median + 1.5 IQR is taken
    base = torch.zeros(1, 9)
    delta = T([[0.01, 0.02, 0.01, 0.03, 2.0, 0.02, 0.01, 0.02, 0.03]])
    out = call("arcee_fusion", [base + delta], base)
    expect = torch.zeros(1, 9)
    expect[0, 4] = 2.0
    assert out.equal(expect)
    # a constant shift leaves the softmax profile alone: zero KL, every score equals the
    # threshold, and (as in mergekit, which compares with >=) the whole change is taken
    out = call("arcee_fusion", [base + 0.5], base)
    assert out.equal(base + 0.5)
