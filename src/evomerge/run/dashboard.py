"""A run's record mirrored into an Optuna study, for optuna-dashboard (extra ``[dashboard]``).

``evomerge dashboard RUN_DIR`` copies every candidate of ``evaluations.jsonl`` into a
JournalStorage file beside it (``optuna.journal``) as a completed trial: the genes as
parameters with their bounds, one value per task (several tasks: the dashboard's Pareto
view), the item budget of multi-fidelity trials as an intermediate value, and the candidate
id, generation, recipe and (once the run finished) test scores as user attributes. It then
serves optuna-dashboard on localhost and keeps copying new records while the run goes on,
so a running, killed or finished run can be watched, including runs made before this
existed: the record is the only source, and the journal can be deleted at any time.
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from evomerge.errors import ConfigError

JOURNAL = "optuna.journal"
STUDY = "evomerge"


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError("the dashboard needs optuna and optuna-dashboard: "
                          "pip install 'evomerge[dashboard]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _genes(run_dir: Path) -> list[Any]:
    """The run's genes (names and bounds), from its config and the base's tensor names."""
    from evomerge.config import load_config
    from evomerge.io.checkpoint import Checkpoint
    from evomerge.io.naming import group_filters, num_layers_of
    from evomerge.spaces import SpaceInputs, build_space

    cfg = load_config(run_dir / "config.yaml")
    base = Checkpoint(cfg.base_model)
    inputs = SpaceInputs(cfg.merge_method, list(cfg.models), cfg.base_model,
                         num_layers_of(base.config, base.names()), group_filters(base.names()),
                         data=cfg.statistics_data())
    return build_space(cfg.space, inputs).genes


class Mirror:
    """The record of one run copied into an Optuna study, incrementally."""

    def __init__(self, run_dir: str | Path) -> None:
        optuna = _optuna()
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        self.run_dir = Path(run_dir)
        if not (self.run_dir / "evaluations.jsonl").exists():
            raise ConfigError(f"{run_dir} is not a run directory (no evaluations.jsonl)")
        self.optuna = optuna
        self.genes = _genes(self.run_dir)
        self.storage = JournalStorage(JournalFileBackend(str(self.run_dir / JOURNAL)))
        self.study: Any = None
        self.seen: set[str] = set()
        self.tested = False

    def _study(self, tasks: list[str]) -> Any:
        if self.study is None:
            self.study = self.optuna.create_study(
                study_name=STUDY, storage=self.storage, load_if_exists=True,
                directions=["maximize"] * len(tasks))
            with warnings.catch_warnings():  # experimental in optuna, stable in use
                warnings.simplefilter("ignore")
                self.study.set_metric_names([f"{t} (estimate)" for t in tasks])
            self.seen = {t.user_attrs.get("key", "") for t in self.study.get_trials()}
        return self.study

    def sync(self) -> int:
        """Copy the candidates not yet mirrored; returns how many were added."""
        from evomerge.run.export import recipe_summary
        from evomerge.run.finish import candidate_order
        from evomerge.run.store import read_records

        records, _ = read_records(self.run_dir / "evaluations.jsonl")
        cands = [r for r in records if r["kind"] == "candidate"]
        if not cands:
            return 0
        tasks = list(cands[0]["estimates"])
        study = self._study(tasks)
        ids = {r["key"]: i for i, r in enumerate(candidate_order(records))}
        dist = self.optuna.distributions.FloatDistribution
        distributions = {g.name: dist(float(g.low), float(g.high)) for g in self.genes}
        added = 0
        for r in sorted(cands, key=lambda r: (r["generation"], r.get("index", 0))):
            key = r["key"]
            if key in self.seen or len(r.get("genome", [])) != len(self.genes):
                continue
            params = {g.name: min(max(float(v), g.low), g.high)
                      for g, v in zip(self.genes, r["genome"], strict=True)}
            attrs = {"key": key, "generation": r["generation"],
                     "recipe": recipe_summary(r["recipe"])}
            if key in ids:
                attrs["candidate"] = f"candidate {ids[key]}"
            trial = self.optuna.trial.create_trial(
                values=[float(r["estimates"][t]) for t in tasks], params=params,
                distributions=distributions, user_attrs=attrs,
                intermediate_values=({int(r["budget"]): float(r["estimates"][tasks[0]])}
                                     if "budget" in r else None))
            study.add_trial(trial)
            self.seen.add(key)
            added += 1
        self._add_test_scores(study)
        return added

    def _add_test_scores(self, study: Any) -> None:
        """Once the run finished: its final table (validation and test) as study attributes."""
        result = self.run_dir / "result.json"
        if self.tested or not result.exists():
            return
        final = json.loads(result.read_text()).get("final", [])
        for row in final:
            study.set_user_attr(f"final: {row['label']}", {
                "role": row["role"], "chosen": row["chosen"], "validation": row["validation"],
                "test": row["test"]})
        self.tested = True


def serve(run_dir: str | Path, port: int = 8080, host: str = "127.0.0.1",
          every: float = 5.0, log: Any = print) -> None:
    """Mirror the run and serve optuna-dashboard on it, copying new records every ``every``
    seconds until interrupted."""
    mirror = Mirror(run_dir)
    added = mirror.sync()
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise ConfigError("the dashboard needs optuna-dashboard: "
                          "pip install 'evomerge[dashboard]'") from None
    stop = threading.Event()

    def follow() -> None:
        while not stop.wait(every):
            try:
                mirror.sync()
            except Exception:  # noqa: BLE001 - a torn write mid-run: the next round reads it
                time.sleep(every)

    threading.Thread(target=follow, daemon=True).start()
    total = len(mirror.study.get_trials()) if mirror.study is not None else 0
    log(f"{total} candidates of {run_dir} in the study ({added} new); dashboard on "
        f"http://{host}:{port}/dashboard/ (Ctrl-C stops it)")
    try:
        run_server(mirror.storage, host=host, port=port)
    finally:
        stop.set()
