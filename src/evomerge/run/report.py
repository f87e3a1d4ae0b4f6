"""Run report: plots (fitness per generation, Pareto front, estimated vs held-out accuracy)
as PNG and a short Markdown summary in the run directory."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from evomerge.run.loop import EvolveResult


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_report(result: EvolveResult, tasks: list[str], estimates: np.ndarray,
                 test_points: list[tuple[list[float], list[float]]]) -> None:
    plt = _plt()
    out = result.run_dir
    if result.history:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        gens = [h["generation"] + 1 for h in result.history]
        ax.plot(gens, [h["best"] for h in result.history], marker="o", label="best")
        ax.plot(gens, [h["mean"] for h in result.history], marker=".", label="mean")
        ax.set_xlabel("generation")
        ax.set_ylabel(f"estimated accuracy ({tasks[0]})")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "fitness.png", dpi=120)
        plt.close(fig)
    if len(tasks) >= 2:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.scatter(estimates[:, 0], estimates[:, 1], s=12, alpha=0.5, label="candidates")
        front = np.array([[p["estimates"][tasks[0]], p["estimates"][tasks[1]]]
                          for p in result.pareto])
        order = np.argsort(front[:, 0])
        ax.plot(front[order, 0], front[order, 1], "r-o", label="Pareto front")
        ax.set_xlabel(tasks[0])
        ax.set_ylabel(tasks[1])
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "pareto.png", dpi=120)
        plt.close(fig)
    if test_points:
        fig, ax = plt.subplots(figsize=(4, 4))
        est = np.array([p[0][0] for p in test_points])
        tst = np.array([p[1][0] for p in test_points])
        ax.scatter(est, tst)
        lim = [0, 1]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set_xlabel("estimated (search subset)")
        ax.set_ylabel("held-out test accuracy")
        ax.set_title(tasks[0])
        fig.tight_layout()
        fig.savefig(out / "estimated_vs_test.png", dpi=120)
        plt.close(fig)
    lines = ["# evomerge run", "", f"Evaluations recorded: {result.evaluations} "
             f"({result.new_evaluations} in this session).", "",
             "## Held-out test accuracy", "",
             "| model | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for label, accs in result.test.items():
        lines.append(f"| {label} | " + " | ".join(f"{100 * accs[t]:.1f}" for t in tasks) + " |")
    lines += ["", "## Best recipe", "", "```yaml", result.best_recipe.to_yaml().rstrip(), "```",
              "", "Plots: fitness.png" + (", pareto.png" if len(tasks) >= 2 else "")
              + ", estimated_vs_test.png"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "result.json").write_text(json.dumps(
        {"best_recipe": result.best_recipe.model_dump(mode="json", exclude_none=True),
         "best_estimate": result.best_estimate, "test": result.test, "history": result.history,
         "pareto": result.pareto}, indent=2))
