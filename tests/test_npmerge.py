"""NP Merge and weight matching on small real networks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from evomerge.errors import ConfigError, ModelError
from evomerge.npmerge import (
    align,
    apply_permutation,
    classification_loss,
    np_merge_modules,
    sequential_spec,
    weight_matching,
)


def mlp(seed: int, width: int = 16) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, width), torch.nn.ReLU(),
                               torch.nn.Linear(width, width), torch.nn.LayerNorm(width),
                               torch.nn.ReLU(), torch.nn.Linear(width, 3))


def cnn(seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 3, padding=1), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
        torch.nn.Conv2d(6, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))
    for m in net.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
    return net.eval()


def random_perms(spec, params, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {p: torch.randperm(params[axes[0][0]].shape[axes[0][1]], generator=g)
            for p, axes in spec.perm_to_axes.items()}


@pytest.mark.parametrize("make, shape", [(mlp, (5, 8)), (cnn, (5, 1, 8, 8))])
def test_permuted_model_computes_the_same_function(make, shape) -> None:
    net = make(0)
    spec = sequential_spec(net)
    assert len(spec.perm_to_axes) == 2  # two hidden layers
    x = torch.randn(*shape)
    before = net(x)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    perms = random_perms(spec, state)
    assert any(not torch.equal(p, torch.arange(len(p))) for p in perms.values())
    net.load_state_dict(apply_permutation(spec, perms, state))
    assert not torch.equal(net.state_dict()["0.weight"], state["0.weight"])
    torch.testing.assert_close(net(x), before, rtol=1e-5, atol=1e-5)


def test_weight_matching_recovers_a_hidden_permutation() -> None:
    a = mlp(0).state_dict()
    spec = sequential_spec(mlp(0))
    shuffled = apply_permutation(spec, random_perms(spec, a, seed=5), a)
    noisy = {k: v + 0.01 * torch.randn_like(v) for k, v in shuffled.items()}
    aligned = align(spec, a, noisy)
    for k in a:  # back in A's unit order, up to the noise
        assert (aligned[k] - a[k]).abs().max() < 0.05, k
    # aligning two independent networks keeps B's function and raises the weight agreement
    b = mlp(1).state_dict()
    perms = weight_matching(spec, a, b)
    b2 = apply_permutation(spec, perms, b)
    x = torch.randn(7, 8)
    net_b, net_b2 = mlp(1), mlp(1)
    net_b2.load_state_dict(b2)
    torch.testing.assert_close(net_b2(x), net_b(x), rtol=1e-5, atol=1e-5)

    def agreement(s: dict) -> float:
        return sum(float((a[k] * s[k]).sum()) for k in spec.axes if k.endswith("weight"))

    assert agreement(b2) > agreement(b)


def test_flatten_without_global_pooling_is_refused() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 2))
    with pytest.raises(ModelError, match="flatten"):
        sequential_spec(net)


def toy_data(seed: int = 0, n: int = 256) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return [(x[i:i + 64], y[i:i + 64]) for i in range(0, n, 64)]


def test_np_merge_starts_at_the_average_and_lowers_the_loss() -> None:
    nets = [mlp(s) for s in (0, 1, 2)]
    states = [n.state_dict() for n in nets]
    data = toy_data()
    # one step with a vanishing learning rate: the plain average (alpha = sigmoid(0))
    r = np_merge_modules(mlp(9), states[:2], data, steps=1, lr=1e-12)
    for k, v in r.state_dict.items():
        torch.testing.assert_close(v, (states[0][k] + states[1][k]) / 2)
    # softmax over three models starts at the uniform average
    r = np_merge_modules(mlp(9), states, data, steps=1, lr=1e-12, mode="softmax")
    for k, v in r.state_dict.items():
        torch.testing.assert_close(v, sum(s[k] for s in states) / 3)
    assert r.coefficients[0]["0.weight"].shape == (3, 16, 8)
    # training lowers the loss, and the merge is exactly the learned interpolation
    r = np_merge_modules(mlp(9), states[:2], data, steps=60, lr=0.1)
    assert sum(r.losses[-4:]) < 0.9 * sum(r.losses[:4])
    alpha = r.coefficients[0]
    assert alpha["0.weight"].shape == (16, 8) and alpha["0.weight"].std() > 0
    for k, v in r.state_dict.items():
        expected = alpha[k] * states[0][k] + (1 - alpha[k]) * states[1][k]
        torch.testing.assert_close(v, expected)


@pytest.mark.parametrize("granularity, shape", [("row", (16, 1)), ("tensor", (1, 1))])
def test_coarser_granularities_share_coefficients(granularity: str, shape: tuple) -> None:
    states = [mlp(s).state_dict() for s in (0, 1, 2)]
    r = np_merge_modules(mlp(9), states, toy_data(), steps=5, lr=0.1, granularity=granularity)
    assert len(r.coefficients) == 2  # successive pairwise merges
    assert r.coefficients[1]["2.weight"].shape == shape
    assert len(r.losses) == 10


def test_bad_inputs_are_one_line_errors() -> None:
    a = mlp(0).state_dict()
    with pytest.raises(ConfigError, match="at least two"):
        np_merge_modules(mlp(0), [a], toy_data())
    wide = mlp(1, width=32).state_dict()
    with pytest.raises(ModelError, match="shape"):
        np_merge_modules(mlp(0), [a, wide], toy_data())
    with pytest.raises(ConfigError, match="granularity"):
        np_merge_modules(mlp(0), [a, a], toy_data(), granularity="block")  # type: ignore[arg-type]


# --- the np-merge job on causal LMs (the committed demo zoo) ---------------------------

def np_config(tmp_path: Path, **over: object) -> Path:
    from evomerge.zoo.manifest import ZOO_DIR

    cfg = {"models": [str(ZOO_DIR / "math_en"), str(ZOO_DIR / "lang_it")],
           "data": {"zoo": "add_it", "split": "search", "limit": 48},
           "test": {"zoo": "add_it", "split": "test"},
           "steps": 8, "lr": 0.05, "batch_size": 16, "output": str(tmp_path / "merged")}
    cfg.update(over)
    path = tmp_path / "np.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_np_merge_cli_writes_a_loadable_interpolation(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    from transformers import AutoModelForCausalLM

    from evomerge.cli import main
    from evomerge.zoo.manifest import ZOO_DIR

    with pytest.raises(SystemExit) as info:
        main(["np-merge", str(np_config(tmp_path)), "-q"])
        raise SystemExit(0)
    assert info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "np-merge" in printed and "math_en" in printed and "over 8 steps" in printed
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").state_dict()
    a = AutoModelForCausalLM.from_pretrained(ZOO_DIR / "math_en").state_dict()
    b = AutoModelForCausalLM.from_pretrained(ZOO_DIR / "lang_it").state_dict()
    moved = 0
    for k, w in merged.items():  # every weight lies between the two endpoints' (alpha in 0..1)
        lo, hi = torch.minimum(a[k], b[k]).float(), torch.maximum(a[k], b[k]).float()
        assert bool(((w.float() >= lo - 1e-3) & (w.float() <= hi + 1e-3)).all()), k
        moved += int((w.float() - (a[k].float() + b[k].float()) / 2).abs().gt(1e-3).sum())
    assert moved > 1000  # learned away from the plain average
    log = json.loads((tmp_path / "merged" / "np_merge_coefficients.json").read_text())
    assert len(log["losses"]) == 8 and log["losses"][-1] < log["losses"][0]
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("change, message", [
    ({"models": ["/nope/model", "/nope/other"]}, "does not exist"),
    ({"data": {"zoo": "add_xx"}}, "unknown zoo task"),
    ({"data": {"zoo": "add_it", "file": "x.jsonl"}}, "one of zoo"),
    ({"steps": 0}, "steps"),
    ({"granularity": "block"}, "granularity"),
])
def test_np_merge_config_errors_are_one_line_and_write_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict, message: str) -> None:
    from evomerge.cli import main

    with pytest.raises(SystemExit) as info:
        main(["np-merge", str(np_config(tmp_path, **change))])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "merged").exists()


def test_np_merge_refuses_mismatched_models(llama: list[Path], tmp_path: Path) -> None:
    from evomerge.config import load_np_merge_config
    from evomerge.npmerge.job import np_merge
    from evomerge.zoo.manifest import ZOO_DIR

    cfg = load_np_merge_config(np_config(tmp_path, models=[str(ZOO_DIR / "math_en"),
                                                           str(llama[1])]))
    with pytest.raises(ModelError, match="differ|shape"):
        np_merge(cfg)
    assert not (tmp_path / "merged").exists()


def test_task_vector_mode_starts_at_task_arithmetic_and_can_leave_the_segment() -> None:
    base = mlp(0).state_dict()
    torch.manual_seed(5)
    fts = [{k: v + 0.05 * torch.randn_like(v) for k, v in base.items()} for _ in range(2)]
    data = toy_data()
    r = np_merge_modules(mlp(9), fts, data, steps=1, lr=1e-12, mode="task_vectors", base=base)
    for k, v in r.state_dict.items():  # lambda = 1: plain task arithmetic
        torch.testing.assert_close(v, base[k] + (fts[0][k] - base[k]) + (fts[1][k] - base[k]))
    r = np_merge_modules(mlp(9), fts, data, steps=60, lr=0.1, mode="task_vectors", base=base,
                         granularity="row")
    assert sum(r.losses[-4:]) < sum(r.losses[:4])
    lam = r.coefficients[0]["0.weight"]
    assert lam.shape == (2, 16, 1) and (lam > 1).any()  # beyond the endpoints' segment
    with pytest.raises(ConfigError, match="base"):
        np_merge_modules(mlp(9), fts, data, mode="task_vectors")


def test_np_merge_job_in_task_vector_mode(tmp_path: Path) -> None:
    from evomerge.config import load_np_merge_config
    from evomerge.npmerge.job import np_merge
    from evomerge.zoo.manifest import ZOO_DIR

    with pytest.raises(ConfigError, match="needs base_model"):
        load_np_merge_config(np_config(tmp_path, mode="task_vectors"))
    cfg = load_np_merge_config(np_config(tmp_path, mode="task_vectors",
                                         base_model=str(ZOO_DIR / "base"), test=None))
    result = np_merge(cfg)
    assert result.losses[-1] < result.losses[0] and (tmp_path / "merged").is_dir()


# --- guard rails: validation, early stopping, the best step kept, a warning ---------------

def _labelled_by(net: torch.nn.Module, seed: int, n: int = 256) -> list[tuple[torch.Tensor,
                                                                             torch.Tensor]]:
    """Inputs labelled by ``net``'s own predictions: the task ``net`` solves perfectly."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    with torch.no_grad():
        y = net(x).argmax(1)
    return [(x[i:i + 64], y[i:i + 64]) for i in range(0, n, 64)]


def test_validation_keeps_the_best_step_stops_early_and_warns() -> None:
    """Training items labelled by model A pull the merge towards A; held-out items labelled
    by model B make every step worse on validation: the untrained start (step 0) is kept,
    training stops after ``patience`` checks, and B alone beats the merge on validation."""
    from evomerge.npmerge.job import _notes

    a, b = mlp(0), mlp(1)
    train, held = _labelled_by(a, 1), _labelled_by(b, 2)

    def validate(forward) -> float:  # noqa: ANN001
        return sum(float(classification_loss(forward, batch)) for batch in held) / len(held)

    start = np_merge_modules(mlp(0), [a.state_dict(), b.state_dict()], train, steps=1,
                             lr=1e-12).state_dict  # coefficients 0.5: the average
    result = np_merge_modules(mlp(0), [a.state_dict(), b.state_dict()], train, steps=200,
                              lr=0.1, validate=validate, eval_every=5, patience=3)
    steps = [s for s, _ in result.validation]
    assert result.best_steps == [0] and steps == [0, 5, 10, 15]  # stopped after 3 checks
    assert len(result.losses) == 15 < 200
    assert result.validation[-1][1] > result.validation[0][1]  # it only got worse
    for name, value in start.items():
        torch.testing.assert_close(result.state_dict[name], value, rtol=1e-5, atol=1e-6)
    assert result.input_validation[1] < result.best_validation  # B alone is better
    cfg = type("C", (), {"models": ["runs/a", "runs/b"]})()
    (note,) = _notes(cfg, result)
    assert "worse than b's own" in note


def test_np_merge_job_holds_out_validation_items_and_records_the_curve(tmp_path: Path) -> None:
    import json

    from evomerge.config import load_np_merge_config
    from evomerge.npmerge.job import _validation_split, np_merge
    from evomerge.zoo.manifest import ZOO_DIR

    cfg = load_np_merge_config(np_config(tmp_path, steps=20, eval_every=5, mode="task_vectors",
                                         base_model=str(ZOO_DIR / "base")))
    from evomerge.eval.sources import load_data

    train, held = _validation_split(cfg, load_data(cfg.data, "data"))
    assert held is not None and len(held.items) == 10 and len(train.items) == 38
    assert not set(train.ids) & set(held.ids)
    result = np_merge(cfg)
    record = json.loads((result.output / "np_merge_coefficients.json").read_text())
    assert [s for s, _ in record["validation"]][:5] == [0, 5, 10, 15, 20]
    assert record["best_steps"] == result.best_steps and 0 <= result.best_steps[0] <= 20
    kept = dict(record["validation"])[result.best_steps[0]]
    assert kept == min(v for _, v in record["validation"])
    assert len(record["input_validation"]) == 2


# --- AdaMerging: task-vector scales learned without labels ---------------------------------

def test_adamerging_task_wise_scales_start_at_0_3_and_lower_the_entropy() -> None:
    from evomerge.npmerge.learn import entropy, entropy_loss

    base = mlp(0).state_dict()
    torch.manual_seed(5)
    fts = [{k: v + 0.3 * torch.randn_like(v) for k, v in base.items()} for _ in range(2)]
    data = toy_data()
    # lr ~ 0: the start is base + 0.3 * (d1 + d2), exactly
    r = np_merge_modules(mlp(9), fts, data, entropy_loss, steps=1, lr=1e-12,
                         mode="adamerging", base=base, granularity="model")
    for k, v in r.state_dict.items():
        torch.testing.assert_close(v, base[k] + 0.3 * (fts[0][k] - base[k])
                                   + 0.3 * (fts[1][k] - base[k]))
    assert r.coefficients[0]["0.weight"].shape == (2,)  # one scale per model
    r = np_merge_modules(mlp(9), fts, data, entropy_loss, steps=80, lr=0.05,
                         mode="adamerging", base=base, granularity="model")
    lam = r.coefficients[0]
    assert all(v.equal(lam["0.weight"]) for v in lam.values())  # shared by every tensor
    for k, v in r.state_dict.items():  # the merge is the formula with the learned scales
        expect = base[k] + sum(lam["0.weight"][i] * (fts[i][k] - base[k]) for i in range(2))
        torch.testing.assert_close(v, expect)
    net = mlp(9)
    net.load_state_dict(r.state_dict)
    with torch.no_grad():
        after = float(entropy(net(torch.cat([x for x, _ in data]))))
    assert after < r.losses[0] - 0.05  # the labels were never used; the entropy fell
    # layer-wise: one scale per model and tensor
    r = np_merge_modules(mlp(9), fts, data, entropy_loss, steps=5, lr=0.05,
                         mode="adamerging", base=base, granularity="tensor")
    assert r.coefficients[0]["0.weight"].shape == (2, 1, 1)
    assert not r.coefficients[0]["0.weight"].equal(r.coefficients[0]["2.weight"])
    with pytest.raises(ConfigError, match="granularity model .* needs mode"):
        np_merge_modules(mlp(9), fts, data, granularity="model")


def test_lm_entropy_is_taken_where_the_answer_starts(llama: list[Path]) -> None:
    """The LM objective reads only the last prompt token's prediction: changing the answer
    tokens changes nothing."""
    from transformers import AutoModelForCausalLM

    from evomerge.npmerge.learn import entropy, lm_entropy_loss

    model = AutoModelForCausalLM.from_pretrained(llama[1]).eval()
    ids = torch.tensor([[5, 9, 13, 2, 7], [4, 8, 3, 6, 0]])
    labels = torch.tensor([[-100, -100, -100, 2, 7], [-100, -100, 3, 6, -100]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    with torch.no_grad():
        got = lm_entropy_loss(lambda **kw: model(**kw), batch)
        logits = model(input_ids=ids, attention_mask=mask).logits
        expect = entropy(torch.stack([logits[0, 2], logits[1, 1]]))
        other = dict(batch, input_ids=torch.tensor([[5, 9, 13, 11, 11], [4, 8, 12, 12, 0]]))
        again = lm_entropy_loss(lambda **kw: model(**kw), other)
    torch.testing.assert_close(got, expect)
    torch.testing.assert_close(got, again, rtol=1e-5, atol=1e-6)


def test_np_merge_job_in_adamerging_mode(tmp_path: Path) -> None:
    from evomerge.config import load_np_merge_config
    from evomerge.npmerge.job import np_merge
    from evomerge.zoo.manifest import ZOO_DIR

    with pytest.raises(ConfigError, match="mode adamerging needs base_model"):
        load_np_merge_config(np_config(tmp_path, mode="adamerging"))
    with pytest.raises(ConfigError, match="granularity model .* needs mode"):
        load_np_merge_config(np_config(tmp_path, granularity="model"))
    cfg = load_np_merge_config(np_config(tmp_path, mode="adamerging", lr=0.01,
                                         base_model=str(ZOO_DIR / "base"), test=None))
    assert cfg.granularity == "tensor"  # layer-wise by default
    result = np_merge(cfg)
    assert result.losses[-1] < result.losses[0] and (tmp_path / "merged").is_dir()
