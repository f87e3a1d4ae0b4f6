"""Every merge method on a FusionBench-style multi-task benchmark that ships offline.

    python benchmarks/methods.py [--seeds 3]      # needs the [bench] extra (scikit-learn)

Data: scikit-learn's bundled digits (1,797 8x8 images). Per seed, a stratified split: 40 %
test (719 images), 10 % validation (used only to pick each method's scale), the rest train.
A base MLP (64-128-128-10) is pre-trained on the clean training images; eight tasks transform
the images (rot90, rot180, flip_lr, flip_ud, invert, noise, blur, a fixed pixel permutation)
and one expert per task is fine-tuned from the base on its transformed training images.
Every method merges all eight experts (tensor by tensor, through evomerge's registered method
functions, as the merge engine calls them). Scores: accuracy on each task's test images and
the average normalised accuracy (merged / the task's own expert), as in FusionBench.

Data-dependent methods: RegMean uses each expert's input Gram matrices and Fisher merging
its diagonal Fisher (labels drawn from the expert's prediction), both from 256 of the
expert's own training images, computed by evomerge's merge/statistics.py; RegMean++ the
same images through the merged earlier layers (for each alpha of its grid). AdaMerging
(task-wise and layer-wise, np-merge's adamerging mode) learns the task-vector scales by
minimising prediction entropy on the unlabeled validation images (the paper adapts on the
unlabeled test images).

Hyperparameters: each method's paper defaults (TIES/DARE/DELLA density 0.2 / 0.3 / 0.3,
Consensus k = 2 and TALL threshold 0.4, Iso-CTS common fraction 0.8, CART rank 10 %), and
for every method with a scale (``lambda``, or the task-vector weights of task arithmetic)
the value from {0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.3, 1.6, 2} with the best mean validation
accuracy (WUDI: its Adam learning rate from {1e-5, 1e-4, 1e-3, 1e-2} instead; SCE: its
select_topk from {0.1, 0.3, 0.5, 1}; RegMean: alpha from {0.5, 0.7, 0.9, 1}). No method
sees test data or labels beyond that choice.

The zoo's LLM pair (``--part zoo``): the committed demo zoo's math_en and compare_en experts
(tiny Llamas, one base) merged by every method that takes two models plus a base, through the
real engine (checkpoint files, ``MergePlan``, merged into a live model; RegMean and Fisher
with each expert's statistics on 256 of its own task's training items), scale chosen on the
zoo's search split from {0.3, 0.5, 0.7, 1, 1.3, 1.6, 2}, scored on the test split of add_en
(math_en's task) and max_en (compare_en's), normalised by each expert on its own task.

Results to benchmarks/results/methods_{digits,zoo}.json and markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
SCALES = [0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.3, 1.6, 2.0, 2.5, 3.0]
TASKS = ["rot90", "rot180", "flip_lr", "flip_ud", "invert", "noise", "blur", "permute"]

# method -> (fixed parameters, the scaled parameter or None); per-model values as scalars
METHODS: dict[str, tuple[dict[str, Any], str | None]] = {
    "linear": ({"weight": 1.0}, None),
    "task_arithmetic": ({"weight": 1.0}, "lambda"),
    "ties": ({"weight": 1.0, "density": 0.2}, "lambda"),
    "dare_ties": ({"weight": 1.0, "density": 0.3}, "lambda"),
    "dare_linear": ({"weight": 1.0, "density": 0.3}, "lambda"),
    "breadcrumbs_ties": ({"weight": 1.0, "density": 0.2, "gamma": 0.01}, "lambda"),
    "della": ({"weight": 1.0, "density": 0.3, "epsilon": 0.1}, "lambda"),
    "model_stock": ({}, None),
    "karcher": ({}, None),
    "multislerp": ({"weight": 1.0}, None),
    "sce": ({}, "select_topk"),
    "ram": ({}, None),
    "ramplus_tl": ({}, None),
    "consensus_ta": ({"weight": 1.0, "k": 2, "tall_threshold": 0.4}, "lambda"),
    "consensus_ties": ({"weight": 1.0, "density": 0.2, "k": 2, "tall_threshold": 0.4},
                       "lambda"),
    "tsv": ({}, "lambda"),
    "iso_c": ({}, "lambda"),
    "iso_cts": ({"common_space_fraction": 0.8}, "lambda"),
    "cart": ({"rank_fraction": 0.1}, "lambda"),
    "wudi": ({"steps": 300}, "lr"),
    "regmean": ({}, "alpha"),  # data-dependent: Gram matrices of each expert's inputs
    "regmean_plusplus": ({}, "alpha"),  # the same through the merged earlier layers
    "fisher": ({"weight": 1.0}, None),  # data-dependent: each expert's diagonal Fisher
}
DATA_N = 256  # examples per expert for the data-dependent methods (from its training split)
WUDI_LR = [1e-5, 1e-4, 1e-3, 1e-2]
SELECT_TOPK = [0.1, 0.3, 0.5, 1.0]
OWN_GRIDS = {"lr": WUDI_LR, "select_topk": SELECT_TOPK, "alpha": [0.5, 0.7, 0.9, 1.0]}


HIDDEN = 512
FT_EPOCHS, FT_LR = 20, 5e-4


def mlp(seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, HIDDEN), torch.nn.ReLU(),
                               torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(),
                               torch.nn.Linear(HIDDEN, 10))


def transform(task: str, x: torch.Tensor, seed: int) -> torch.Tensor:
    """The task's view of images ``x`` (n, 64) in [0, 1]; fixed per seed."""
    img = x.view(-1, 8, 8)
    g = torch.Generator().manual_seed(seed * 100 + TASKS.index(task))
    if task == "rot90":
        img = torch.rot90(img, 1, (1, 2))
    elif task == "rot180":
        img = torch.rot90(img, 2, (1, 2))
    elif task == "flip_lr":
        img = img.flip(2)
    elif task == "flip_ud":
        img = img.flip(1)
    elif task == "invert":
        img = 1 - img
    elif task == "noise":
        img = (img + 0.3 * torch.randn(img.shape, generator=torch.Generator().manual_seed(
            seed * 7 + len(x)))).clamp(0, 1)
    elif task == "blur":
        img = torch.nn.functional.avg_pool2d(img.unsqueeze(1), 3, 1, 1,
                                             count_include_pad=False).squeeze(1)
    elif task == "permute":
        img = img.reshape(-1, 64)[:, torch.randperm(64, generator=g)]
    return img.reshape(-1, 64).contiguous()


def train(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int,
          lr: float, head: bool = True) -> torch.nn.Module:
    params = list(net.parameters()) if head else list(net[:-1].parameters())
    opt = torch.optim.Adam(params, lr=lr)
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(
            seed * 1000 + epoch))
        for i in range(0, len(x), 32):
            b = order[i:i + 32]
            loss = torch.nn.functional.cross_entropy(net(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def accuracy(state: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
    net = mlp(0)
    net.load_state_dict(state)
    return 100 * float((net(x).argmax(1) == y).float().mean())


def merge(name: str, params: dict[str, Any], base: dict[str, torch.Tensor],
          experts: list[dict[str, torch.Tensor]], seed: int,
          stats: dict[str, list[dict[str, torch.Tensor]]] | None = None
          ) -> dict[str, torch.Tensor]:
    """All experts merged tensor by tensor by the registered method (the engine's call)."""
    from evomerge.io.naming import module_kind
    from evomerge.merge.registry import get_method

    m = get_method(name)
    kwargs = {}
    for spec in m.params():
        value = params.get(spec.name, spec.default)
        if spec.meta.per_model and not isinstance(value, list):
            value = [value] * len(experts)
        kwargs[spec.arg] = spec.validate(value) if not spec.meta.per_model else value
    out = {}
    for key, b in base.items():
        tensors = [e[key] for e in experts]
        use_base = None if m.base == "input" else b  # "input": the base is not merged
        gen = torch.Generator().manual_seed(seed) if m.stochastic else None
        per_input = None
        if m.statistics is not None and stats is not None:
            per_input = [st.get(key) for st in stats[m.statistics]]
        out[key] = m(tensors, use_base, generator=gen, kind=module_kind(key), stats=per_input,
                     **kwargs)
    return out


def expert_statistics(experts: list[dict[str, torch.Tensor]], views: dict[str, Any],
                      seed: int) -> dict[str, list[dict[str, torch.Tensor]]]:
    """Each expert's input Gram matrices and diagonal Fisher on DATA_N of its own task's
    training images, by evomerge's statistics code (merge/statistics.py)."""
    from evomerge.merge.statistics import diagonal_fisher, input_grams

    out: dict[str, Any] = {"gram": [], "fisher": [], "data": []}
    for task, state in zip(TASKS, experts, strict=True):
        net = mlp(0)
        net.load_state_dict(state)
        x, y = views[task]["train"]
        pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:DATA_N]
        batches = [{"x": x[pick[i:i + 64]], "labels": y[pick[i:i + 64]]}
                   for i in range(0, len(pick), 64)]
        out["gram"].append(input_grams(net, batches, lambda m, b: m(b["x"])))
        out["data"].append(batches)
        # the true Fisher (Matena & Raffel): labels drawn from the expert's own prediction
        with torch.no_grad():
            drawn = [torch.multinomial(torch.softmax(net(b["x"]), -1), 1, generator=torch
                                       .Generator().manual_seed(seed)).squeeze(-1)
                     for b in batches]
        sampled = [{"x": b["x"], "labels": d} for b, d in zip(batches, drawn, strict=True)]
        out["fisher"].append(diagonal_fisher(net, sampled, lambda m, b: torch.nn.functional
                                             .cross_entropy(m(b["x"]), b["labels"])))
    return out


def adamerging(base: dict[str, torch.Tensor], experts: list[dict[str, torch.Tensor]],
               views: dict[str, Any], granularity: str, seed: int) -> dict[str, torch.Tensor]:
    """AdaMerging through evomerge's np-merge learner: task-vector scales from 0.3, Adam
    (lr 1e-3, 500 steps, as the paper), minimising the prediction entropy on the unlabeled
    validation images of every task (16 per task per step)."""
    from evomerge.npmerge.learn import entropy_loss, np_merge_modules

    g = torch.Generator().manual_seed(seed)
    pools = [views[t]["val"][0] for t in TASKS]
    batches = []
    for _ in range(50):
        batches.append(torch.cat([x[torch.randperm(len(x), generator=g)[:16]] for x in pools]))
    result = np_merge_modules(mlp(0), experts, batches, entropy_loss, steps=500, lr=1e-3,
                              mode="adamerging", base=base, granularity=granularity)
    return result.state_dict


def one_seed(seed: int) -> dict[str, Any]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from evomerge.merge.statistics import sequential_grams

    data = load_digits()
    x_all = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y_all = torch.tensor(data.target)
    idx = np.arange(len(y_all))
    rest, test = train_test_split(idx, test_size=0.4, stratify=data.target, random_state=seed)
    train_idx, val = train_test_split(rest, test_size=1 / 6, stratify=data.target[rest],
                                      random_state=seed)
    views = {t: {s: (transform(t, x_all[i], seed), y_all[i]) for s, i in
                 (("train", train_idx), ("val", val), ("test", test))} for t in TASKS}
    t0 = time.time()
    base_net = train(mlp(seed), x_all[train_idx], y_all[train_idx], seed, 40, 1e-3)
    base = {k: v.detach().clone() for k, v in base_net.state_dict().items()}
    experts = []
    for k, task in enumerate(TASKS):
        net = mlp(seed)
        net.load_state_dict(base)
        x, y = views[task]["train"]
        net = train(net, x, y, seed + 10 * (k + 1), FT_EPOCHS, FT_LR, head=False)
        experts.append({n: v.detach().clone() for n, v in net.state_dict().items()})
    train_s = time.time() - t0
    t0 = time.time()
    stats = expert_statistics(experts, views, seed)
    stats_s = time.time() - t0

    def scores(state: dict[str, torch.Tensor], split: str) -> dict[str, float]:
        return {t: accuracy(state, *views[t][split]) for t in TASKS}

    expert_test = {t: accuracy(e, *views[t]["test"]) for t, e in zip(TASKS, experts,
                                                                      strict=True)}
    rows: dict[str, Any] = {
        "base": {"test": scores(base, "test")},
        "experts (each on its task)": {"test": expert_test},
    }
    for name, (fixed, scaled) in METHODS.items():
        grid = OWN_GRIDS.get(scaled or "", SCALES if scaled else [None])
        best: tuple[float, Any, dict[str, torch.Tensor], float] | None = None
        for value in grid:
            params = dict(fixed)
            if scaled is not None:
                params[scaled] = value
            if name == "regmean_plusplus":  # its statistics depend on alpha
                stats["gram_pp"] = sequential_grams(mlp(0), experts, stats["data"], value,
                                                    lambda m, b: m(b["x"]))
            start = time.time()
            merged = merge(name, params, base, experts, seed, stats)
            seconds = time.time() - start
            val_acc = statistics.mean(scores(merged, "val").values())
            if best is None or val_acc > best[0]:
                best = (val_acc, value, merged, seconds)
        assert best is not None
        rows[name] = {"test": scores(best[2], "test"), "chosen": best[1],
                      "merge_s": round(best[3], 3)}
    for granularity, label in (("model", "adamerging (task-wise)"),
                               ("tensor", "adamerging (layer-wise)")):
        start = time.time()
        merged = adamerging(base, experts, views, granularity, seed)
        rows[label] = {"test": scores(merged, "test"), "chosen": "-",
                       "merge_s": round(time.time() - start, 3)}
    for row in rows.values():
        row["normalised"] = statistics.mean(
            100 * row["test"][t] / expert_test[t] for t in TASKS)
        row["mean"] = statistics.mean(row["test"].values())
    return {"seed": seed, "train_s": round(train_s, 1), "statistics_s": round(stats_s, 2),
            "rows": rows}


def table(results: list[dict[str, Any]], tasks: list[str] = TASKS) -> str:
    names = list(results[0]["rows"])
    head = ("| method | " + " | ".join(tasks) + " | mean acc | normalised | chosen | merge s |\n"
            "|---|" + "---:|" * (len(tasks) + 4) + "\n")
    lines = []
    order = sorted(names, key=lambda n: -statistics.mean(r["rows"][n]["normalised"]
                                                         for r in results))
    for n in order:
        rs = [r["rows"][n] for r in results]

        def fmt(values: list[float]) -> str:
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.1f} ± {sd:.1f}"

        cells = [f"{statistics.mean(r['test'][t] for r in rs):.1f}" for t in tasks]
        chosen = ", ".join(str(r["chosen"]) for r in rs) if "chosen" in rs[0] else ""
        secs = f"{statistics.mean(r['merge_s'] for r in rs):.3f}" if "merge_s" in rs[0] else ""
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {fmt([r['mean'] for r in rs])} | "
                     f"{fmt([r['normalised'] for r in rs])} | {chosen} | {secs} |")
    return head + "\n".join(lines) + "\n"


ZOO_SCALES = [0.3, 0.5, 0.7, 1.0, 1.3, 1.6, 2.0]
ZOO_TASKS = {"add_en": "math_en", "max_en": "compare_en"}


def zoo_pair(log: Callable[[str], None]) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from evomerge.eval.evaluator import Evaluator
    from evomerge.merge.disk import open_sources
    from evomerge.merge.planner import MergePlan
    from evomerge.merge.registry import get_method
    from evomerge.merge.statistics import for_recipe
    from evomerge.recipe import load_recipe
    from evomerge.zoo.data import zoo_task
    from evomerge.zoo.manifest import ZOO_DIR

    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(ZOO_DIR / "base")
    live = AutoModelForCausalLM.from_pretrained(ZOO_DIR / "base", dtype=torch.float32)
    ev = Evaluator(live, tok, batch_size=256)
    splits = {s: {t: zoo_task(t, s) for t in ZOO_TASKS} for s in ("search", "test")}

    def scores(split: str) -> dict[str, float]:
        return {t: 100 * ev(task).accuracy for t, task in splits[split].items()}

    def apply(recipe: dict[str, Any]) -> float:
        r = load_recipe(recipe)
        start = time.time()
        stats = for_recipe(r, HERE / "work" / "statistics")  # cached after the first use
        stats_s[0] += time.time() - start
        start = time.time()
        MergePlan.build(r, open_sources(r), seed=0, statistics=stats).merge_into(live)
        return time.time() - start

    stats_s = [0.0]  # seconds spent computing statistics (once per model and data)
    experts = {}
    for task, model in ZOO_TASKS.items():
        apply({"merge_method": "passthrough", "models": [{"model": str(ZOO_DIR / model)}]})
        experts[task] = scores("test")[task]
    rows: dict[str, Any] = {}
    apply({"merge_method": "passthrough", "models": [{"model": str(ZOO_DIR / "base")}]})
    rows["base"] = {"test": scores("test")}
    for name, (fixed, scaled) in METHODS.items():
        m = get_method(name)
        grid = OWN_GRIDS.get(scaled or "", ZOO_SCALES if scaled else [None])
        best: tuple[float, Any, float] | None = None
        for value in grid:
            params = dict(fixed)
            if scaled is not None:
                params[scaled] = value
            per = {p.name: params.pop(p.name) for p in m.per_model if p.name in params}
            models = [{"model": str(ZOO_DIR / x), "parameters": dict(per)}
                      for x in ZOO_TASKS.values()]
            if m.statistics:  # each expert's statistics on its own task's training items
                for entry, task in zip(models, ZOO_TASKS, strict=True):
                    entry["data"] = {"zoo": task, "split": "train", "limit": DATA_N}
            recipe: dict[str, Any] = {"merge_method": name, "models": models,
                                      "parameters": params}
            if m.base != "input":
                recipe["base_model"] = str(ZOO_DIR / "base")
            seconds = apply(recipe)
            val = statistics.mean(scores("search").values())
            if best is None or val > best[0]:
                best = (val, value, seconds)
                rows[name] = {"test": scores("test"), "chosen": value,
                              "merge_s": round(seconds, 3)}
        log(f"zoo {name}: {rows[name]['test']} (scale {rows[name]['chosen']})")
    for row in rows.values():
        row["normalised"] = statistics.mean(100 * row["test"][t] / experts[t]
                                            for t in ZOO_TASKS)
        row["mean"] = statistics.mean(row["test"].values())
    rows = {"experts (each on its task)": {"test": experts, "normalised": 100.0,
                                           "mean": statistics.mean(experts.values())},
            **rows}
    return {"seed": 0, "rows": rows, "statistics_s": round(stats_s[0], 1)}


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--part", choices=["digits", "zoo", "all"], default="all")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    (HERE / "results").mkdir(exist_ok=True)
    if args.part in ("zoo", "all"):
        zoo = zoo_pair(log)
        (HERE / "results" / "methods_zoo.json").write_text(json.dumps(
            {"tasks": ZOO_TASKS, "results": [zoo]}, indent=1))
        log(table([zoo], list(ZOO_TASKS)))
    if args.part == "zoo":
        return
    results = []
    for seed in range(args.seeds):
        start = time.time()
        results.append(one_seed(seed))
        log(f"seed {seed} done in {time.time() - start:.0f} s")
    out = HERE / "results" / "methods_digits.json"
    out.write_text(json.dumps({"seeds": args.seeds, "tasks": TASKS, "results": results},
                              indent=1))
    log(table(results))


if __name__ == "__main__":
    main()
