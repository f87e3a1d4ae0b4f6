"""NP Merge on scikit-learn's bundled digits (offline): models trained from different
initialisations on different class mixtures, merged without and with alignment.

    python benchmarks/np_merge_digits.py [--seeds 5]      # needs the [bench] extra

Per seed: a stratified 40 % test split (719 images); from the rest, a merge set of 10 images
per class (100) that no endpoint trains on, and the training pool. With K models, model k
trains on every pool image of its own classes plus 10 % of the others' (K=2: classes 0-4 /
5-9; K=3: 0-3 / 4-6 / 7-9), MLP 64-128-128-10, its own initialisation seed. Reported on the
full test set: each endpoint, the naive weight average, the average after weight matching
(B, C aligned to A), NP Merge (pairwise; and the joint softmax for K=3) without and with
alignment, trained on the merge set only, and the output ensemble (mean of the endpoints'
probabilities) as a reference. Results to benchmarks/results/np_merge_digits.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
CLASS_SETS = {2: [range(0, 5), range(5, 10)], 3: [range(0, 4), range(4, 7), range(7, 10)]}


def mlp(seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                               torch.nn.Linear(128, 128), torch.nn.ReLU(),
                               torch.nn.Linear(128, 10))


def batches(x: torch.Tensor, y: torch.Tensor, size: int, seed: int
            ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return [(x[order[i:i + size]], y[order[i:i + size]]) for i in range(0, len(x), size)]


def train(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int,
          epochs: int = 40) -> torch.nn.Module:
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for epoch in range(epochs):
        for bx, by in batches(x, y, 32, seed * 1000 + epoch):
            loss = torch.nn.functional.cross_entropy(net(bx), by)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def accuracy(state: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
    net = mlp(0)
    net.load_state_dict(state)
    return 100 * float((net(x).argmax(1) == y).float().mean())


def average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: sum(s[k] for s in states) / len(states) for k in states[0]}  # type: ignore[misc]


def one_seed(seed: int, k: int, steps: int) -> dict[str, float]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from evomerge.npmerge import align, np_merge_modules, sequential_spec

    data = load_digits()
    x_all = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y_all = torch.tensor(data.target)
    idx = np.arange(len(y_all))
    pool, test = train_test_split(idx, test_size=0.4, stratify=data.target, random_state=seed)
    rng = np.random.default_rng(seed)
    merge_idx = np.concatenate([rng.choice(pool[data.target[pool] == c], 10, replace=False)
                                for c in range(10)])
    pool = np.setdiff1d(pool, merge_idx)
    x_test, y_test = x_all[test], y_all[test]
    states = []
    for j, classes in enumerate(CLASS_SETS[k]):
        own = np.isin(data.target[pool], list(classes))
        extra = rng.random(len(pool)) < 0.1
        chosen = pool[own | extra]
        net = train(mlp(100 * seed + j), x_all[chosen], y_all[chosen], seed=100 * seed + j)
        states.append({n: t.detach().clone() for n, t in net.state_dict().items()})
    out = {f"endpoint {j}": accuracy(s, x_test, y_test) for j, s in enumerate(states)}
    spec = sequential_spec(mlp(0))
    aligned = [states[0]] + [align(spec, states[0], s, seed=seed) for s in states[1:]]
    out["naive average"] = accuracy(average(states), x_test, y_test)
    out["aligned average"] = accuracy(average(aligned), x_test, y_test)
    merge_data = batches(x_all[merge_idx], y_all[merge_idx], 32, seed)
    variants = [("NP Merge, no alignment", states, "pairwise"),
                ("NP Merge (aligned)", aligned, "pairwise")]
    if k > 2:
        variants.append(("NP Merge softmax (aligned)", aligned, "softmax"))
    for label, sts, mode in variants:
        r = np_merge_modules(mlp(0), sts, merge_data, steps=steps, lr=0.05, mode=mode)
        out[label] = accuracy(r.state_dict, x_test, y_test)
    with torch.no_grad():
        probs = []
        for s in states:
            net = mlp(0)
            net.load_state_dict(s)
            probs.append(torch.softmax(net(x_test), 1))
        out["ensemble (reference)"] = 100 * float(
            (torch.stack(probs).mean(0).argmax(1) == y_test).float().mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(2)
    results = {}
    for k in (2, 3):
        runs = [one_seed(seed, k, args.steps) for seed in range(args.seeds)]
        summary = {label: {"mean": statistics.mean(r[label] for r in runs),
                           "std": statistics.stdev(r[label] for r in runs)
                           if len(runs) > 1 else 0.0,
                           "runs": [r[label] for r in runs]} for label in runs[0]}
        results[f"K={k}"] = summary
        print(f"\nK = {k} models, {args.seeds} seeds (test accuracy %, mean +- std)")
        print("| merge | accuracy |\n|---|---|")
        for label, v in summary.items():
            print(f"| {label} | {v['mean']:.1f} +- {v['std']:.1f} |")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "np_merge_digits.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
