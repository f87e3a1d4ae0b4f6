"""How much an accuracy measured on a few items can be trusted: intervals and paired tests.

A search's scores come from tens to hundreds of items, so two merges 1-2 items apart are not
known to differ. Every accuracy evomerge reports carries its item count and a 95 % Wilson
score interval (sound at 0 %, 100 % and small n, where the normal approximation is not), and
the final answer is compared with the best input model and the best hand-set baseline on the
*same* items with McNemar's exact test: only the items on which the two disagree carry
information about which is better, and a paired test sees a real 3-point gain that two
overlapping intervals would hide.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile
ALPHA = 0.05  # the level at which a difference is called real


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``k / n`` (95 % by default); (0, 1) for
    n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_p(wins: int, losses: int) -> float:
    """Exact two-sided McNemar p-value: under "no difference" each discordant item is a fair
    coin, so the smaller count is binomial(wins + losses, 1/2)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class Paired:
    """The answer against another model on the items both answered."""

    against: str  # the other model's label
    items: int  # items compared
    wins: int  # right for the answer, wrong for the other
    losses: int  # wrong for the answer, right for the other
    gain: float  # accuracy difference (answer - other), in [−1, 1]
    p: float  # exact McNemar p-value

    @property
    def real(self) -> bool:
        """A difference that chance alone would rarely give (p < 0.05)."""
        return self.p < ALPHA

    def as_dict(self) -> dict[str, float | int | str | bool]:
        return {**asdict(self), "real": self.real}

    def sentence(self, split: str, subject: str = "the answer") -> str:
        """One line a person can act on."""
        sign = "+" if self.gain >= 0 else "−"
        counts = (f"{self.items} items: {self.wins} right only for {subject}, "
                  f"{self.losses} only for {self.against}; McNemar p = {self.p:.2g}")
        head = f"on the {split} items {subject} is {sign}{100 * abs(self.gain):.1f} points " \
               f"against {self.against}"
        if self.real:
            verdict = "a real gain" if self.gain > 0 else "a real loss"
        elif self.gain > 0:
            verdict = "within noise: not shown to be better"
        elif self.gain < 0:
            verdict = "lower here, within noise"
        else:
            verdict = "no difference"
        return f"{head} ({counts}): {verdict}"


def paired(answer: Mapping[str, Mapping[str, int]], other: Mapping[str, Mapping[str, int]],
           against: str) -> Paired:
    """Compare per-item correctness (task -> item id -> 0/1) on the items both have,
    pooled over the tasks."""
    wins = losses = n = same = 0
    for task, mine in answer.items():
        theirs = other.get(task, {})
        for item, a in mine.items():
            if item in theirs:
                b = theirs[item]
                n += 1
                wins += int(bool(a) and not b)
                losses += int(bool(b) and not a)
                same += int(bool(a) == bool(b))
    gain = (wins - losses) / n if n else 0.0
    return Paired(against, n, wins, losses, gain, mcnemar_p(wins, losses))


def interval_text(k: int, n: int) -> str:
    """"25.0 % [14.2-40.2], n=40": a score with its interval and item count."""
    lo, hi = wilson(k, n)
    return f"{100 * k / max(n, 1):.1f} % [{100 * lo:.1f}-{100 * hi:.1f}], n={n}"
