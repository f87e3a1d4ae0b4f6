"""Intervals, paired comparisons and the bounded Pareto set of the final step, against
hand-computed values and scipy's own tests."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from evomerge.run.finish import bounded_front, pareto_front
from evomerge.stats import interval_text, mcnemar_p, paired, wilson


@pytest.mark.parametrize(("k", "n"), [(0, 10), (20, 40), (40, 40), (3, 7), (101, 240)])
def test_wilson_equals_scipy(k: int, n: int) -> None:
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_wilson_by_hand() -> None:
    # 0 of 10: centre = half = (z^2/20) / (1 + z^2/10)
    z2 = 1.959963984540054 ** 2
    assert wilson(0, 10) == pytest.approx((0.0, 2 * (z2 / 20) / (1 + z2 / 10)))
    assert wilson(0, 0) == (0.0, 1.0)
    assert interval_text(20, 40) == "50.0 % [35.2-64.8], n=40"


@pytest.mark.parametrize(("wins", "losses"), [(5, 0), (10, 2), (3, 3), (0, 0), (7, 19)])
def test_mcnemar_exact_equals_a_binomial_test_on_discordant_items(wins: int, losses: int
                                                                  ) -> None:
    expected = binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    assert mcnemar_p(wins, losses) == pytest.approx(expected, abs=1e-12)
    assert mcnemar_p(5, 0) == pytest.approx(2 / 32)  # by hand


def test_paired_counts_only_shared_items_pooled_over_tasks() -> None:
    answer = {"a": {"1": 1, "2": 1, "3": 0, "4": 1}, "b": {"x": 1, "y": 0}}
    other = {"a": {"1": 0, "2": 1, "3": 1, "5": 0}, "b": {"x": 0, "y": 0}}
    cmp = paired(answer, other, "math_en")
    # shared: a/1 (win), a/2 (tie), a/3 (loss), b/x (win), b/y (tie); a/4, a/5 unshared
    assert (cmp.items, cmp.wins, cmp.losses) == (5, 2, 1)
    assert cmp.gain == pytest.approx(1 / 5)
    assert cmp.p == pytest.approx(1.0) and not cmp.real
    assert "within noise" in cmp.sentence("test")
    lost = paired(other, answer, "ties")
    assert "lower here, within noise" in lost.sentence("test")
    real = paired({"t": {str(i): 1 for i in range(20)}}, {"t": {str(i): 0 for i in range(20)}},
                  "base")
    assert real.real and "a real gain" in real.sentence("test")


def test_bounded_front_counts_ties_once_and_caps_by_spread() -> None:
    # 130 candidates on two tasks of 4 items: most tie on the same few score vectors
    rng = np.random.default_rng(0)
    points = rng.integers(0, 5, size=(130, 2)) / 4
    front = pareto_front(points)
    assert len(front) > len({tuple(p) for p in points[front]})  # ties on the front
    unique = bounded_front(points, front, cap=100)
    assert len(unique) == len({tuple(p) for p in points[front]})
    assert all(i == min(j for j in front if tuple(points[j]) == tuple(points[i]))
               for i in unique)  # the first asked of each tie
    line = np.array([[k / 10, 1 - k / 10] for k in range(11)])  # 11 distinct on the front
    capped = bounded_front(line, pareto_front(line), cap=4)
    # each task's best (the two ends), then the most spread out
    assert len(capped) == 4 and {0, 10} <= set(capped.tolist())


def test_the_answer_is_compared_with_the_best_input_and_baseline_on_the_same_items() -> None:
    from evomerge.run.baselines import model_recipe
    from evomerge.run.finish import Contender, compare_answer

    def items(right: int, n: int = 10) -> dict[str, dict[str, int]]:
        return {"t": {str(i): int(i < right) for i in range(n)}}

    def contender(label: str, role: str, val: int, test: int) -> Contender:
        c = Contender(label, role, model_recipe(label))
        c.validation_items, c.test_items = items(val), items(test)
        c.validation, c.test = {"t": val / 10}, {"t": test / 10}
        return c

    answer = contender("candidate 3", "candidate", 8, 5)
    pool = [contender("a", "input", 6, 7), contender("b", "input", 2, 9),
            contender("ties", "baseline", 7, 4), answer]
    notes: list[str] = []
    out = compare_answer(answer, pool, notes)
    # the best input by validation is a (6 > 2), not b (best on test: never chosen by test)
    assert [(c["against"], c["split"]) for c in out] == [
        ("a", "validation"), ("a", "test"), ("ties", "validation"), ("ties", "test")]
    assert (out[1]["wins"], out[1]["losses"], out[1]["gain"]) == (0, 2, -0.2)
    assert len(notes) == 2 and "reverses on the held-out items" in notes[0]
    assert "reverses" not in notes[1] and "+10.0 points against ties" in notes[1]
