"""Data-dependent merges: RegMean and Fisher merging against independent computations, and
their statistics computed once per (model, data) and reused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evomerge.merge.statistics import diagonal_fisher, input_grams

from .test_methods import call

T = torch.tensor


def test_regmean_is_the_least_squares_fit_of_all_models_outputs() -> None:
    # alpha = 1: W minimises sum_i |X_i W^T - X_i W_i^T|^2, i.e. the least-squares solution of
    # the stacked system, computed here by torch.linalg.lstsq (another algorithm)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(40, 6, generator=g, dtype=torch.float64) for _ in range(3)]
    ws = [torch.randn(4, 6, generator=g, dtype=torch.float64) for _ in range(3)]
    grams = [x.T @ x / len(x) for x in xs]
    m = __import__("evomerge.merge.registry", fromlist=["get_method"]).get_method("regmean")
    out = m(ws, None, stats=grams, alpha=1.0)
    a = torch.cat(xs)
    b = torch.cat([x @ w.T for x, w in zip(xs, ws, strict=True)])
    expect = torch.linalg.lstsq(a, b).solution.T
    torch.testing.assert_close(out, expect, rtol=0, atol=1e-9)
    # alpha < 1 with diagonal Gram matrices: an element-wise average weighted by each
    # model's input energy: columns weighted 1:3 and 2:2
    w1, w2 = T([[1.0, 2.0]]), T([[5.0, 6.0]])
    out = m([w1, w2], None, stats=[torch.diag(T([1.0, 2.0])), torch.diag(T([3.0, 2.0]))],
            alpha=0.5)
    torch.testing.assert_close(out, T([[(1 + 15) / 4, (4 + 12) / 4]]))
    # a bias (no Gram matrix) is the mean; so is any tensor when a model lacks statistics
    assert m([T([1.0, 3.0]), T([3.0, 5.0])], None, stats=[None, None], alpha=0.9).tolist() == [
        2.0, 4.0]


def test_fisher_weights_each_element_by_each_models_fisher() -> None:
    m = __import__("evomerge.merge.registry", fromlist=["get_method"]).get_method("fisher")
    out = m([T([1.0, 1.0]), T([5.0, 3.0])], None, stats=[T([1.0, 0.0]), T([3.0, 0.0])],
            weight=[1.0, 1.0], fisher_floor=1e-6)
    # element 0: (1*1 + 3*5) / 4; element 1: both Fishers floored equally -> the mean
    torch.testing.assert_close(out, T([4.0, 2.0]))
    out = m([T([1.0]), T([5.0])], None, stats=[T([1.0]), T([1.0])], weight=[3.0, 1.0],
            fisher_floor=1e-6)
    torch.testing.assert_close(out, T([2.0]))
    assert call("fisher", [T([1.0]), T([5.0])], weight=[3.0, 1.0]).tolist() == [2.0]


def test_input_grams_equal_the_layer_inputs_computed_without_hooks(llama: list[Path]) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(llama[1]).eval()
    ids = torch.tensor([[5, 9, 13, 2, 7], [4, 8, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    grams = input_grams(model, [{"input_ids": ids, "attention_mask": mask}])
    # q_proj of layer 0 sees the normed embeddings of the 8 real tokens
    with torch.no_grad():
        layer = model.model.layers[0]
        x = layer.input_layernorm(model.model.embed_tokens(ids))[mask.bool()].double()
    expect = (x.T @ x / 8).float()
    torch.testing.assert_close(grams["model.layers.0.self_attn.q_proj.weight"], expect,
                               rtol=1e-5, atol=1e-6)
    # padding left out: the padded batch equals the two sequences run one by one
    one_by_one = input_grams(model, [{"input_ids": ids[:1], "attention_mask": mask[:1]},
                                     {"input_ids": ids[1:, :3], "attention_mask": mask[1:, :3]}])
    for name, gram in grams.items():
        torch.testing.assert_close(gram, one_by_one[name], rtol=1e-4, atol=1e-6)
    linear = {n for n, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}
    assert set(grams) == {f"{n}.weight" for n in linear}


def test_diagonal_fisher_is_the_mean_squared_per_example_gradient() -> None:
    # loss (w.x - y)^2 has gradient 2 (w.x - y) x; with w = (1, 2):
    # x = (1, 0), y = 0 -> grad (2, 0);  x = (1, 1), y = 1 -> grad (4, 4)
    net = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.copy_(T([[1.0, 2.0]]))
    batch = {"x": T([[1.0, 0.0], [1.0, 1.0]]), "y": T([0.0, 1.0])}
    fisher = diagonal_fisher(net, [batch], lambda m, b: ((m(b["x"]).squeeze(-1) - b["y"]) ** 2
                                                         ).sum())
    torch.testing.assert_close(fisher["weight"], T([[(4 + 16) / 2, (0 + 16) / 2]]))


def _recipe(zoo: Path, method: str, **extra: object) -> dict:
    return {"merge_method": method,
            "models": [{"model": str(zoo / "math_en"),
                        "data": {"zoo": "add_en", "limit": 12}},
                       {"model": str(zoo / "compare_en"),
                        "data": {"zoo": "max_en", "limit": 12}}], **extra}


@pytest.mark.parametrize("method", ["regmean", "fisher"])
def test_statistics_are_computed_once_and_reused(tmp_path: Path, method: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from evomerge.merge import statistics
    from evomerge.merge.disk import merge_to_disk
    from evomerge.recipe import load_recipe
    from evomerge.zoo.manifest import ZOO_DIR

    from .helpers import load_model_tensors, record_calls

    cache = tmp_path / "stats"
    calls = record_calls(monkeypatch, statistics, "compute")
    recipe = load_recipe(_recipe(ZOO_DIR, method))
    merge_to_disk(recipe, tmp_path / "a", statistics_dir=cache)
    assert len(calls) == 2 and len(list(cache.glob("*.safetensors"))) == 2
    merge_to_disk(recipe, tmp_path / "b", statistics_dir=cache)
    assert len(calls) == 2  # the second merge read them from the cache
    a, b = load_model_tensors(tmp_path / "a"), load_model_tensors(tmp_path / "b")
    assert all(a[k].equal(b[k]) for k in a)
    # the merge used them: the result is not the plain average of the two models
    m1, m2 = (load_model_tensors(ZOO_DIR / x) for x in ("math_en", "compare_en"))
    name = "model.layers.0.mlp.down_proj.weight"
    assert not torch.allclose(a[name], (m1[name] + m2[name]) / 2, atol=1e-6)
    # other data: other statistics
    other = _recipe(ZOO_DIR, method)
    other["models"][0]["data"]["limit"] = 10
    merge_to_disk(load_recipe(other), tmp_path / "c", statistics_dir=cache)
    assert len(calls) == 3


def test_a_data_dependent_recipe_without_data_is_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    import yaml

    from evomerge.zoo.manifest import ZOO_DIR

    recipe = _recipe(ZOO_DIR, "regmean")
    for m in recipe["models"]:
        del m["data"]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "EVOMERGE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "evomerge", "merge", str(path), "-o",
                           str(tmp_path / "out")], capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "needs gram statistics: give the recipe" in lines[0]
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "cache").exists()  # no statistics computed before the error
    # a misspelt key of the data block: named, with the closest one, still one line
    recipe["models"][0]["data"] = {"zoo": "add_en", "limt": 8}
    recipe["models"][1]["data"] = {"zoo": "max_en", "limit": 8}
    path.write_text(yaml.safe_dump(recipe))
    proc = subprocess.run([sys.executable, "-m", "evomerge", "merge", str(path), "-o",
                           str(tmp_path / "out")], capture_output=True, text=True, env=env)
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2 and len(lines) == 1
    assert "data: limt: Extra inputs are not permitted (did you mean 'limit'?)" in lines[0]
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "cache").exists()  # no statistics computed before the error


def test_regmean_plusplus_feeds_each_layer_through_the_merged_earlier_layers() -> None:
    """Two-layer MLPs: the first layer's Gram matrices are each model's own inputs; the
    second's are each model's data passed through the merged first layer (RegMean's
    solution) and the averaged bias, computed here directly."""
    from evomerge.merge.statistics import regmean_solve, sequential_grams

    g = torch.Generator().manual_seed(0)

    def net() -> torch.nn.Sequential:
        return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(),
                                   torch.nn.Linear(6, 3))

    states = []
    for _ in range(2):
        m = net()
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        states.append({k: v.detach().clone() for k, v in m.state_dict().items()})
    xs = [torch.randn(32, 4, generator=g) for _ in range(2)]
    batches = [[{"x": x[:16]}, {"x": x[16:]}] for x in xs]
    grams = sequential_grams(net(), states, batches, 0.9, lambda m, b: m(b["x"]))
    g1 = [x.T @ x / len(x) for x in xs]
    for i in range(2):
        torch.testing.assert_close(grams[i]["0.weight"], g1[i], rtol=1e-5, atol=1e-6)
    w1 = regmean_solve([s["0.weight"] for s in states], g1, 0.9)
    b1 = (states[0]["0.bias"] + states[1]["0.bias"]) / 2
    for i in range(2):
        h = torch.relu(xs[i] @ w1.T + b1)
        torch.testing.assert_close(grams[i]["2.weight"], h.T @ h / len(h), rtol=1e-4,
                                   atol=1e-5)
        own = torch.relu(xs[i] @ states[i]["0.weight"].T + states[i]["0.bias"])
        assert not torch.allclose(grams[i]["2.weight"], own.T @ own / len(own), atol=1e-3)


def test_regmean_plusplus_merges_checkpoints_with_joint_cached_statistics(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evomerge.merge import statistics
    from evomerge.merge.disk import merge_to_disk
    from evomerge.recipe import load_recipe
    from evomerge.zoo.manifest import ZOO_DIR

    from .helpers import load_model_tensors, record_calls

    calls = record_calls(monkeypatch, statistics, "compute_joint")
    cache = tmp_path / "stats"
    recipe = load_recipe(_recipe(ZOO_DIR, "regmean_plusplus"))
    merge_to_disk(recipe, tmp_path / "a", statistics_dir=cache)
    merge_to_disk(recipe, tmp_path / "b", statistics_dir=cache)
    assert len(calls) == 1 and len(list(cache.glob("gram_pp-*.safetensors"))) == 2
    pp = load_model_tensors(tmp_path / "a")
    merge_to_disk(load_recipe(_recipe(ZOO_DIR, "regmean")), tmp_path / "r",
                  statistics_dir=cache)
    plain = load_model_tensors(tmp_path / "r")
    name = "model.layers.1.mlp.down_proj.weight"
    assert not torch.allclose(pp[name], plain[name], atol=1e-5)  # other inputs, other fit
    # another alpha changes the earlier merged layers, so the statistics are new
    other = _recipe(ZOO_DIR, "regmean_plusplus", parameters={"alpha": 0.5})
    merge_to_disk(load_recipe(other), tmp_path / "c", statistics_dir=cache)
    assert len(calls) == 2
    with pytest.raises(Exception, match="one alpha for the whole merge"):
        bad = _recipe(ZOO_DIR, "regmean_plusplus", parameters={"alpha": [0.5, 0.9]})
        merge_to_disk(load_recipe(bad), tmp_path / "d", statistics_dir=cache)
    assert not (tmp_path / "d").exists()


def test_an_unwritable_statistics_cache_is_one_line(tmp_path: Path) -> None:
    import os

    from evomerge.errors import EvomergeError
    from evomerge.merge.disk import merge_to_disk
    from evomerge.recipe import load_recipe
    from evomerge.zoo.manifest import ZOO_DIR

    if os.geteuid() == 0:  # root writes anywhere: a file in the way stands in for it
        blocked = tmp_path / "file"
        blocked.write_text("x")
        cache = blocked / "stats"
    else:
        cache = tmp_path / "ro"
        cache.mkdir()
        cache.chmod(0o500)
    with pytest.raises(EvomergeError, match="cannot write statistics to .*EVOMERGE_CACHE"):
        merge_to_disk(load_recipe(_recipe(ZOO_DIR, "regmean")), tmp_path / "out",
                      statistics_dir=cache)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "cache").exists()  # no statistics computed before the error
