"""Run report: plots (fitness per generation, Pareto front, estimated vs held-out accuracy)
as PNG and a short Markdown summary in the run directory."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evomerge.io.outdir import atomic_write_text

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
    from matplotlib.ticker import MaxNLocator

    out = result.run_dir
    if result.history:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        gens = [h["generation"] + 1 for h in result.history]
        several = len(tasks) >= 2 and all("tasks" in h for h in result.history)
        if several:  # every task's best per generation, not the first task's alone
            for k, t in enumerate(tasks):
                ax.plot(gens, [h["tasks"][t] for h in result.history], marker="o",
                        color=f"C{k}", label=f"best {t}")
        else:
            multi = "best_budget" in result.history[0]
            ax.plot(gens, [h["best"] for h in result.history], marker="o",
                    label="best at the highest budget so far" if multi else "best")
            ax.plot(gens, [h["mean"] for h in result.history], marker=".",
                    label="this trial" if multi else "mean")
        inputs = [(r["label"], r["validation"].get(tasks[0])) for r in result.final
                  if r["role"] == "input" and r["validation"].get(tasks[0]) is not None]
        for k, (label, value) in enumerate(inputs):  # what the search has to beat
            ax.axhline(value, color=f"C{k + 2}", ls="--", lw=0.8, label=f"{label} (input)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("trial" if "budget" in result.history[0] else "generation")
        ax.set_ylabel("estimated accuracy" if several else f"estimated accuracy ({tasks[0]})")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "fitness.png", dpi=120)
        plt.close(fig)
    if len(tasks) >= 2 and len(estimates):  # each task: best estimate so far, inputs
        fig, axes = plt.subplots(1, len(tasks), figsize=(3.4 * len(tasks), 3), squeeze=False)
        for k, (t, ax) in enumerate(zip(tasks, axes[0], strict=True)):
            x = np.arange(1, len(estimates) + 1)
            ax.scatter(x, estimates[:, k], s=8, alpha=0.4, label="candidates")
            ax.plot(x, np.maximum.accumulate(estimates[:, k]), label="best so far")
            for j, row in enumerate(r for r in result.final if r["role"] == "input"):
                if t in row["validation"]:
                    ax.axhline(row["validation"][t], color=f"C{j + 2}", ls="--", lw=0.8,
                               label=f"{row['label']} (input)")
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))  # no overlap
            ax.set_xlabel("candidates evaluated")
            ax.set_title(t)
        axes[0][0].set_ylabel("estimated accuracy")
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "fitness_tasks.png", dpi=120)
        plt.close(fig)
    if len(tasks) >= 2:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.scatter(estimates[:, 0], estimates[:, 1], s=12, alpha=0.5, label="candidates")
        front = np.array([[p["estimates"][tasks[0]], p["estimates"][tasks[1]]]
                          for p in result.pareto])
        ax.scatter(front[:, 0], front[:, 1], s=36, c="red", label="Pareto front")
        marked = False
        for row in result.final:  # the input models, on the whole search split
            if row["role"] == "input" and all(t in row["validation"] for t in tasks[:2]):
                ax.scatter(row["validation"][tasks[0]], row["validation"][tasks[1]],
                           marker="*", s=120, c="k",
                           label=None if marked else "input models (validation)")
                marked = True
                ax.annotate(row["label"], (row["validation"][tasks[0]],
                                           row["validation"][tasks[1]]), fontsize=7,
                            xytext=(4, 4), textcoords="offset points")
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
             f"({result.new_evaluations} in this session).", ""]
    if result.final:
        lines += ["## Final choice", "",
                  "The top candidates by estimate, the input models and the hand-set baselines, "
                  "re-scored on the whole search split (validation); the answer (**bold**) is "
                  "the best there. Test: the held-out split. Accuracy in % with its 95 % "
                  f"interval (Wilson; {item_counts(result.final, tasks)}). Any row: "
                  "`evomerge export RUN_DIR LABEL -o OUT`.", "",
                  *final_table(result.final, tasks), ""]
    if result.comparisons:
        lines += ["## Is the gain real?", "",
                  f"The answer ({result.chosen}) against the best input model and the best "
                  "hand-set baseline on the same items (McNemar's exact test; a gain is "
                  "real at p < 0.05).", "",
                  "| against | role | split | items | right only for the answer | "
                  "right only for the other | gain (points) | p | real |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for c in result.comparisons:
            lines.append(f"| {c['against']} | {c['role']} | {c['split']} | {c['items']} | "
                         f"{c['wins']} | {c['losses']} | {100 * c['gain']:+.1f} | "
                         f"{c['p']:.2g} | {'yes' if c['real'] else 'no'} |")
        lines.append("")
    lines += ["## Held-out test accuracy", "",
              "| model | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for label, accs in result.test.items():
        lines.append(f"| {label} | " + " | ".join(f"{100 * accs[t]:.1f}" for t in tasks) + " |")
    if result.notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in result.notes)]
    lines += ["", "## Best recipe", "", "```yaml", result.best_recipe.to_yaml().rstrip(), "```",
              "", "Plots: fitness.png" + (", fitness_tasks.png, pareto.png" if len(tasks) >= 2
                                          else "")
              + ", estimated_vs_test.png"]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    atomic_write_text(out / "result.json", json.dumps(
        {"best_recipe": result.best_recipe.model_dump(mode="json", exclude_none=True),
         "best_estimate": result.best_estimate, "chosen": result.chosen,
         "test": result.test, "final": result.final, "comparisons": result.comparisons,
         "history": result.history, "pareto": result.pareto, "notes": result.notes},
        indent=2))


def final_columns(tasks: list[str]) -> list[str]:
    """Column names of the final choice after model and role: estimate, validation, test
    per task (the task's name added when there are several)."""
    return [f"{k} {t}" if len(tasks) > 1 else k for t in tasks
            for k in ("estimate", "validation", "test")]


def final_rows(final: list[dict[str, Any]], tasks: list[str], noise: str = "interval"
               ) -> list[tuple[dict[str, Any], list[str]]]:
    """The contenders of the final choice, the answer first, then candidates, then the
    others, each by validation; with their cells in % (blank where not measured), the
    validation and test cells with their 95 % interval: ``noise`` "interval" writes
    "25.3 [20.1-31.0]", "short" writes "25.3 [20-31]", "" nothing."""
    def pct(v: float | None) -> str:
        return "" if v is None else f"{100 * v:.1f}"

    def cell(row: dict[str, Any], split: str, t: str) -> str:
        value = row[split].get(t)
        band = (row.get(f"{split}_noise") or {}).get(t)
        if value is None or not band or not noise:
            return pct(value)
        lo, hi = band["interval"]
        if noise == "short":
            return f"{pct(value)} [{100 * lo:.0f}-{100 * hi:.0f}]"
        return f"{pct(value)} [{pct(lo)}-{pct(hi)}]"

    rows = []
    for row in sorted(final, key=lambda r: (not r["chosen"], r["role"] != "candidate",
                                            -np.mean(list(r["validation"].values())))):
        cells: list[str] = []
        for t in tasks:
            cells += [pct((row["estimates"] or {}).get(t)), cell(row, "validation", t),
                      cell(row, "test", t)]
        rows.append((row, cells))
    return rows


def item_counts(final: list[dict[str, Any]], tasks: list[str]) -> str:
    """"validation 240, test 120 items" (per task when they differ): what the intervals
    rest on."""
    parts = []
    for split in ("validation", "test"):
        counts = {t: max((r.get(f"{split}_noise") or {}).get(t, {}).get("n", 0)
                         for r in final) for t in tasks}
        if len(set(counts.values())) == 1:
            parts.append(f"{split} {next(iter(counts.values()))}")
        else:
            parts.append(f"{split} " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    return ", ".join(parts) + " items"


def final_table(final: list[dict[str, Any]], tasks: list[str]) -> list[str]:
    """Markdown rows: contender, role, then estimate / validation / test per task."""
    from evomerge.run.export import recipe_summary

    head = ["model", "role", *final_columns(tasks), "recipe"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for row, cells in final_rows(final, tasks):
        label = f"**{row['label']}**" if row["chosen"] else row["label"]
        recipe = f"`{recipe_summary(row['recipe'])}`" if row["role"] != "input" else ""
        lines.append("| " + " | ".join([label, row["role"], *cells, recipe]) + " |")
    return lines


def summarize(run_dir: Path, top: int = 5) -> dict[str, Any]:
    """What a run directory holds so far, finished or not (the record is append-only, so a
    run in progress can be read safely): evaluations by kind, items evaluated, the best
    candidates by estimate (for multi-fidelity runs, at the highest budget seen), what the
    evaluators adapted (a lowered batch size), and a ``progress.png`` of the best estimate
    against candidates evaluated."""
    from evomerge.errors import ConfigError
    from evomerge.run.store import RECORD_FILE, read_records

    path = Path(run_dir) / RECORD_FILE
    if not path.exists():
        raise ConfigError(f"{run_dir} is not a run directory (no {RECORD_FILE})")
    records, _ = read_records(path)  # a torn last line is skipped, anything else refused
    kinds: dict[str, int] = {}
    for r in records:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    from evomerge.run.finish import candidate_order, evaluation_notes

    cands = [r for r in records if r["kind"] == "candidate"]
    items: dict[str, int] = {}
    for r in records:
        items[r["split"]] = items.get(r["split"], 0) + sum(len(t["ids"])
                                                            for t in r["tasks"].values())
    tasks = list(cands[0]["estimates"]) if cands else []
    ordered = candidate_order(records)
    ids = {id(r): i for i, r in enumerate(ordered)}
    ranked = sorted(ordered, key=lambda r: -sum(r["estimates"].values())) if tasks else []
    best = [{"id": ids[id(r)], "generation": r.get("generation"), "budget": r.get("budget"),
             "estimates": r["estimates"], "recipe": r["recipe"]} for r in ranked[:top]]
    if cands:
        plt = _plt()
        from matplotlib.ticker import MaxNLocator

        running, curve = float("-inf"), []
        for r in cands:
            running = max(running, r["estimates"][tasks[0]])
            curve.append(running)
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(range(1, len(curve) + 1), curve)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("candidates evaluated")
        ax.set_ylabel(f"best estimate so far ({tasks[0]})")
        fig.tight_layout()
        with contextlib.suppress(OSError):  # a read-only run directory is still summarised
            fig.savefig(Path(run_dir) / "progress.png", dpi=120)
        plt.close(fig)
    return {"evaluations": kinds, "items": items, "tasks": tasks, "best": best,
            "finished": (Path(run_dir) / "result.json").exists(),
            "notes": evaluation_notes(records)}
