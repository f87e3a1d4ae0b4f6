"""Contract suites: every registered component of a kind must pass its kind's tests, so a
new space, optimizer, estimator, extraction, backend or task source is checked the moment
its file exists (Optuna's sampler test suite is the model). The committed zoo is the
fixture; nothing here restates an implementation's formula (those tests live with each
component's own module tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from evomerge.config import load_config
from evomerge.errors import EvomergeError
from evomerge.eval.sources import TASK_SOURCES, load_data, load_task_pair
from evomerge.fitness import ESTIMATORS, EXTRACTIONS, fit_ability, fit_irt, random_subset
from evomerge.fitness.extraction import ExtractionInputs
from evomerge.io.checkpoint import Checkpoint
from evomerge.io.naming import num_layers_of
from evomerge.merge.planner import MergePlan
from evomerge.optim import OPTIMIZERS, SearchContext
from evomerge.run.backends import BACKENDS
from evomerge.spaces import SPACES, PerModelSpace, SpaceInputs
from evomerge.zoo.manifest import ZOO_DIR

ROOT = Path(__file__).resolve().parent.parent
BASE, MODELS = str(ZOO_DIR / "base"), [str(ZOO_DIR / "math_en"), str(ZOO_DIR / "lang_it")]


# -- spaces --------------------------------------------------------------------------------
def _space(name: str):  # noqa: ANN202
    cls = SPACES.get(name)
    base = Checkpoint(BASE)
    inputs = SpaceInputs("task_arithmetic", MODELS, BASE, num_layers_of(base.config,
                                                                         base.names()))
    return cls.build(cls.Options(), inputs)


def _merged(recipe) -> dict[str, torch.Tensor]:  # noqa: ANN001
    sources = {m: Checkpoint(m) for m in recipe.referenced_models()}
    plan = MergePlan.build(recipe, sources, seed=0)
    return {task.out.name: t for task, t in plan.tensors(torch.device("cpu"), torch.float32)}


@pytest.mark.parametrize("name", SPACES.names())
def test_space_endpoints_reproduce_every_input_model(name: str) -> None:
    space = _space(name)
    inputs = {m: Checkpoint(m) for m in [BASE, *MODELS]}
    reproduced = set()
    for genome in space.endpoints():
        out = _merged(space.to_recipe(genome))
        same = [m for m, ck in inputs.items()
                if all(torch.allclose(t.float(), ck.get(k).float(), atol=1e-6)
                       for k, t in out.items() if k in ck.names())]
        assert same, f"{name}: an endpoint genome reproduces no input model"
        reproduced.update(same)
    assert set(MODELS) <= reproduced  # every fine-tune is reachable unchanged


@pytest.mark.parametrize("name", SPACES.names())
def test_space_repair_is_idempotent_and_random_genomes_give_recipes(name: str) -> None:
    space = _space(name)
    xl, xu = space.bounds
    rng = np.random.default_rng(0)
    checkpoints = {m: Checkpoint(m) for m in [BASE, *MODELS]}
    planned = 0
    for _ in range(12):
        x = space.repair(xl + rng.random(len(xl)) * (xu - xl))
        assert np.array_equal(space.repair(x), x)
        assert np.all((x >= xl) & (x <= xu))
        try:
            recipe = space.to_recipe(x)
        except EvomergeError:  # a genome the space rejects (e.g. a stack beyond max_depth)
            continue
        MergePlan.build(recipe, checkpoints, seed=0)  # a recipe the engine accepts
        planned += 1
    assert planned >= 6


# -- optimizers ----------------------------------------------------------------------------
def _drive(name: str, tmp: Path, n_obj: int) -> list[np.ndarray]:
    cls = OPTIMIZERS.get(name)
    space = PerModelSpace("ties", MODELS, BASE)  # 4 genes
    ctx = SearchContext(space, n_obj=n_obj, seed=5, n_items=60, slots=2, run_dir=tmp)
    options = cls.Options(name=name, pop_size=4, generations=3)
    cls.check(options, ctx)
    opt = cls.create(options, ctx, space.endpoints())
    term = cls.termination(options)
    asked = []
    while not term.done(opt):
        trials = opt.ask()
        X = np.array([t.genome for t in trials])  # noqa: N806
        asked.append(X)
        # a deterministic landscape: distance to a point, and to another for objective 2
        values = np.stack([np.abs(X - 0.3).sum(axis=1), np.abs(X - 0.8).sum(axis=1)][:n_obj],
                          axis=1)
        opt.tell(trials, values)
        term.update(trials, values, new_items=0)
    return asked


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_optimizer_same_seed_and_values_give_the_same_asks(name: str, tmp_path: Path) -> None:
    """The resume guarantee: a replay that tells the same values asks the same trials."""
    n_obj = 2 if OPTIMIZERS.get(name).multi_objective else 1
    first = _drive(name, tmp_path / "a", n_obj)
    again = _drive(name, tmp_path / "b", n_obj)
    assert len(first) >= 2 and len(first) == len(again)
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a, b)
    space = PerModelSpace("ties", MODELS, BASE)
    xl, xu = space.bounds
    for X in first:  # noqa: N806
        assert np.all((xl - 1e-9 <= X) & (xu + 1e-9 >= X))


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS.names()
                                  if not OPTIMIZERS.get(n).multi_objective])
def test_single_objective_optimizers_refuse_two_objectives(name: str) -> None:
    cls = OPTIMIZERS.get(name)
    ctx = SearchContext(PerModelSpace("ties", MODELS, BASE), n_obj=2, seed=0)
    with pytest.raises(EvomergeError, match="single-objective"):
        cls.check(cls.Options(name=name), ctx)


# -- estimators and extractions ------------------------------------------------------------
@pytest.fixture(scope="module")
def irt_world() -> dict:
    """Synthetic 2PL responses: 10 calibration models (the first 3 are the endpoints), a
    population of 30 more with known true accuracy on 150 items."""
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.5, 2.0, 150), rng.normal(0, 1, 150)

    def draw(theta: np.ndarray) -> np.ndarray:
        p = 1 / (1 + np.exp(-(a[None] * theta[:, None] - b[None])))
        return (rng.random(p.shape) < p).astype(float)

    full = draw(rng.normal(0, 1, 10))
    population = draw(rng.normal(0, 1, 30))
    irt, _ = fit_irt(full, kind="2pl", dims=1, seed=0)
    return {"full": full, "population": population, "irt": irt,
            "thetas": fit_ability(irt, full[:3], np.arange(150))}


@pytest.mark.parametrize("name", ESTIMATORS.names())
def test_estimator_is_a_vectorised_accuracy_that_tracks_the_truth(name: str,
                                                                  irt_world: dict) -> None:
    subset = random_subset(150, 30, seed=1)
    est = ESTIMATORS.get(name)(subset, irt=irt_world["irt"],
                               endpoint_thetas=irt_world["thetas"],
                               calibration=irt_world["full"], delta="auto")
    y = irt_world["population"][:, subset.items]
    values = est.estimate(y)
    assert values.shape == (30,) and np.all((values >= 0) & (values <= 1))
    rows = np.array([est.estimate(row)[0] for row in y])
    # vectorised = one by one (IRT abilities are fitted to an optimiser's tolerance)
    np.testing.assert_allclose(values, rows, atol=1e-3)
    assert est.estimate(np.ones(30))[0] >= est.estimate(np.zeros(30))[0]
    truth = irt_world["population"].mean(axis=1)
    assert float(np.mean(np.abs(values - truth))) < 0.12  # 30 of 150 items
    with pytest.raises(EvomergeError, match="answers per candidate"):
        est.estimate(np.ones((1, 29)))


@pytest.mark.parametrize("name", EXTRACTIONS.names())
def test_extraction_gives_a_seeded_weighted_subset(name: str, irt_world: dict) -> None:
    inputs = ExtractionInputs(total=150, strata=[str(i % 3) for i in range(150)],
                              irt=irt_world["irt"], responses=irt_world["full"])
    ext = EXTRACTIONS.get(name)()
    sub = ext.extract(inputs, 20, seed=4)
    assert sub.n_total == 150 and 1 <= sub.n <= 20
    assert len(set(sub.items.tolist())) == sub.n and np.all((sub.items >= 0) & (sub.items < 150))
    assert np.all(sub.weights > 0) and np.isclose(sub.weights.sum(), 1.0)
    again = ext.extract(inputs, 20, seed=4)
    assert np.array_equal(sub.items, again.items)
    assert np.array_equal(sub.weights, again.weights)


# -- task sources --------------------------------------------------------------------------
def _source_configs(tmp: Path) -> dict[str, dict]:
    from evomerge.zoo.data import task_items

    items = task_items("add_it", "search")
    for split, part in (("search", items[:30]), ("test", items[30:50])):
        (tmp / f"{split}.jsonl").write_text("".join(
            json.dumps({"id": it.id, "prompt": it.prompt, "answer": it.answer}) + "\n"
            for it in part))
    return {
        "zoo": {"name": "t", "zoo": "add_it"},
        "files": {"name": "t", "search": str(tmp / "search.jsonl"),
                  "test": str(tmp / "test.jsonl")},
        "lm_eval": {"name": "t", "lm_eval": str(ROOT / "examples/tasks/numbers_it_mc.yaml"),
                    "search_size": 20, "test_size": 10},
    }


@pytest.mark.parametrize("name", TASK_SOURCES.names())
def test_task_source_gives_disjoint_search_and_test_items(name: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    if name == "lm_eval":
        pytest.importorskip("lm_eval")
    monkeypatch.chdir(ROOT)  # lm-eval resolves the example's data file from the repo root
    configs = _source_configs(tmp_path)
    assert name in configs, f"task source {name} has no contract fixture here"
    cfg = load_config({"base_model": BASE, "models": MODELS, "tasks": [configs[name]]})
    search, test = load_task_pair(cfg.tasks[0])
    assert search.items and test.items
    assert len(set(search.ids)) == len(search.ids)
    assert not set(search.ids) & set(test.ids)


# -- backends ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", BACKENDS.names())
def test_backend_gives_the_local_run_record(name: str, tmp_path: Path) -> None:
    """Same genomes, per-item results and estimates, each evaluated once, as local."""
    if name == "ray":
        pytest.importorskip("ray")
    from evomerge.run.loop import evolve

    def run(backend: dict, where: str) -> dict:
        cfg = {"base_model": BASE, "models": MODELS, "space": {"type": "per_model"},
               "tasks": [{"name": "add_it", "zoo": "add_it"}],
               "fitness": {"subset_size": 10, "estimator": "mean", "calibration_merges": 0},
               "optimizer": {"name": "ga", "pop_size": 4, "generations": 2},
               "backend": backend, "write_best": False, "run_dir": str(tmp_path / where)}
        evolve(load_config(cfg))
        out = {}
        for line in (tmp_path / where / "evaluations.jsonl").read_text().splitlines():
            rec = json.loads(line)
            rec.pop("seconds"), rec.pop("worker")
            out[rec["key"]] = rec
        return out

    options = {"name": name, **({"workers": 2} if name == "ray" else {})}
    assert run(options, name) == run({"name": "local"}, "reference")


def test_np_merge_data_comes_from_the_same_sources(tmp_path: Path) -> None:
    from evomerge.config import DataConfig

    data = load_data(DataConfig(zoo="add_it", split="search", limit=7), "data")
    assert len(data.items) == 7
    (tmp_path / "d.jsonl").write_text('{"prompt": "1+1", "answer": "2"}\n')
    assert load_data(DataConfig(file=str(tmp_path / "d.jsonl")), "data").items[0].answer == "2"
