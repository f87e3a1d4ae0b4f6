"""`evomerge merge` end to end: outputs that load, one-line errors with exit code 2, nothing
half-written."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from evomerge.cli import main
from evomerge.recipe import load_recipe

from .helpers import load_model_tensors


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


def ties_recipe(base: Path, ft1: Path, ft2: Path, **params: object) -> dict:
    p1 = {"weight": 1.0, "density": 0.5, **params}
    return {"merge_method": "ties", "base_model": str(base),
            "models": [{"model": str(ft1), "parameters": p1},
                       {"model": str(ft2), "parameters": {"weight": 0.5, "density": 0.5}}]}


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
        raise SystemExit(0)
    return int(info.value.code or 0), capsys.readouterr().err


def test_merge_writes_a_loadable_model_with_card_recipe_and_tokenizer(
        llama: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = write_recipe(tmp_path / "r.yaml", ties_recipe(*llama))
    out = tmp_path / "merged"
    code, _ = run_cli(["merge", str(recipe), "-o", str(out), "--out-dtype", "bfloat16"], capsys)
    assert code == 0
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json", "README.md", "mergekit_config.yml"} <= names
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("1 + 2 = 3", return_tensors="pt").input_ids
    assert torch.isfinite(model(ids).logits).all()
    assert all(t.dtype == torch.bfloat16 for t in load_model_tensors(out).values())
    assert "ties" in (out / "README.md").read_text()
    assert load_recipe(out / "mergekit_config.yml") == load_recipe(recipe)


def test_failure_mid_merge_leaves_no_output(llama: list[Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from evomerge import merge
    from evomerge.merge.planner import MergePlan

    real = MergePlan.compute
    calls = {"n": 0}

    def flaky(self, task, device="cpu", dtype=torch.float32):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt
        return real(self, task, device, dtype)

    monkeypatch.setattr(MergePlan, "compute", flaky)
    with pytest.raises(KeyboardInterrupt):
        merge(ties_recipe(*llama), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def broken_models(llama: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from evomerge.zoo.tiny import make_family

    root = tmp_path_factory.mktemp("broken")
    wide = make_family("llama", root / "wide", n_finetunes=0, hidden=48, tokenizer=False)[0]
    missing = root / "missing"
    shutil.copytree(llama[2], missing)
    tensors = load_file(str(missing / "model.safetensors"))
    del tensors["model.layers.1.mlp.down_proj.weight"]
    save_file(tensors, str(missing / "model.safetensors"))
    truncated = root / "truncated"
    shutil.copytree(llama[2], truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[:-1000])
    return {"wide": wide, "missing": missing, "truncated": truncated}


ERROR_CASES = {
    "unknown method": (lambda r, m: {**r, "merge_method": "tis"}, "unknown merge method 'tis'"),
    "density out of range": (lambda r, m: ties_recipe(*m["llama"], density=1.5),
                             "density=1.5 is out of range [0.0, 1.0]"),
    "density gradient out of range": (lambda r, m: ties_recipe(*m["llama"], density=[0.5, 2]),
                                      "out of range"),
    "shape mismatch": (lambda r, m: ties_recipe(m["llama"][0], m["llama"][1], m["wide"]),
                       "shape mismatch for tensor lm_head.weight: model"),
    "missing tensor": (lambda r, m: ties_recipe(m["llama"][0], m["llama"][1], m["missing"]),
                       "tensor model.layers.1.mlp.down_proj.weight is missing in model"),
    "truncated file": (lambda r, m: ties_recipe(m["llama"][0], m["llama"][1], m["truncated"]),
                       "truncated"),
    "missing model dir": (lambda r, m: ties_recipe(m["llama"][0], m["llama"][1], "/nope/x"),
                          "does not exist"),
    "missing weight": (lambda r, m: {**r, "models": [{"model": str(m["llama"][1])}]},
                       "parameter weight is required"),
    "slerp without base": (lambda r, m: {"merge_method": "slerp", "parameters": {"t": 0.5},
                                         "models": [{"model": str(p)} for p in m["llama"][:2]]},
                           "slerp needs a base_model"),
    "typo in key": (lambda r, m: {**r, "paramters": {}}, "paramters: Extra inputs"),
    "both models and slices": (lambda r, m: {**r, "slices": [{"sources": [
        {"model": "x", "layer_range": [0, 1]}]}]}, "exactly one of 'models' or 'slices'"),
    "wrong type": (lambda r, m: ties_recipe(*m["llama"], weight="heavy"),
                   "weight='heavy' must be a float"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_user_mistakes_give_one_line_and_exit_2(case: str, llama: list[Path],
                                                broken_models: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    make, expected = ERROR_CASES[case]
    models = {"llama": llama, **broken_models}
    recipe = write_recipe(tmp_path / "r.yaml", make(ties_recipe(*llama), models))
    out = tmp_path / "new" / "out"  # a missing parent is not created before work starts
    code, stderr = run_cli(["merge", str(recipe), "-o", str(out)], capsys)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


def test_bad_yaml_and_existing_output_and_missing_cuda(llama: list[Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("merge_method: ties\nmodels: [\n")
    code, err = run_cli(["merge", str(bad), "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "not valid YAML" in err and len(err.strip().splitlines()) == 1
    recipe = write_recipe(tmp_path / "r.yaml", ties_recipe(*llama))
    existing = tmp_path / "existing"
    existing.mkdir()
    code, err = run_cli(["merge", str(recipe), "-o", str(existing)], capsys)
    assert code == 2 and "already exists (use --force" in err
    assert list(existing.iterdir()) == []
    code, _ = run_cli(["merge", str(recipe), "-o", str(existing), "--force", "-q"], capsys)
    assert code == 0 and (existing / "model.safetensors").exists()
    if not torch.cuda.is_available():
        code, err = run_cli(["merge", str(recipe), "-o", str(tmp_path / "c"), "--device",
                             "cuda"], capsys)
        assert code == 2 and "CUDA is not available" in err


def test_real_process_prints_no_traceback(llama: list[Path], tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", ties_recipe(*llama, density=1.5))
    proc = subprocess.run([sys.executable, "-m", "evomerge", "merge", str(recipe), "-o",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: ") and "density" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["evolve_lfs_smac.yaml", "evolve_dis_ray.yaml",
                                  "evolve_lm_eval.yaml"])
def test_example_search_configs_are_valid(name: str) -> None:
    from evomerge.config import load_config

    cfg = load_config(Path(__file__).parents[1] / "examples" / name)
    assert Path(cfg.base_model).is_dir() and all(Path(m).is_dir() for m in cfg.models)


def test_example_np_merge_config_is_valid() -> None:
    from evomerge.config import load_np_merge_config

    cfg = load_np_merge_config(Path(__file__).parents[1] / "examples" / "np_merge.yaml")
    assert all(Path(m).is_dir() for m in cfg.models) and cfg.data.zoo == "add_it"


@pytest.mark.parametrize("where, recipe_change, expected", [
    ("model", lambda r: r["models"][0]["parameters"].update(densty=0.5),
     "unknown parameter 'densty' for ties (did you mean 'density'?"),
    ("recipe", lambda r: r.update(parameters={"lamda": 0.5}),
     "parameters: unknown parameter 'lamda' for ties (did you mean 'lambda'?"),
    ("other method", lambda r: r.update(merge_method="task_arithmetic"),
     "unknown parameter 'density' for task_arithmetic"),
])
def test_unknown_recipe_parameter_is_one_line_naming_the_closest(
        llama: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str,
        recipe_change, expected: str) -> None:  # noqa: ANN001
    """mergekit silently merges with the default when a key is misspelt; evomerge refuses."""
    recipe = ties_recipe(*llama)
    recipe_change(recipe)
    path = write_recipe(tmp_path / "r.yaml", recipe)
    out = tmp_path / "merged"
    code, err = run_cli(["merge", str(path), "-o", str(out)], capsys)
    assert code == 2, where
    assert expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_slice_parameters_must_suit_the_slices_own_method(llama: list[Path]) -> None:
    from evomerge.errors import ConfigError
    from evomerge.merge.planner import check_parameter_names

    base, ft1, _ = llama
    src = [{"model": str(base), "layer_range": [0, 4]}, {"model": str(ft1), "layer_range": [0, 4]}]
    ok = {"merge_method": "linear", "base_model": str(base),
          "slices": [{"sources": src, "merge_method": "slerp", "parameters": {"t": 0.3}}],
          "parameters": {"weight": 1.0}}  # recipe-wide: valid for linear, the recipe's method
    check_parameter_names(load_recipe(ok))
    bad = {**ok, "slices": [{**ok["slices"][0], "parameters": {"t": 0.3, "weight": 1.0}}]}
    with pytest.raises(ConfigError, match="slice 0: unknown parameter 'weight' for slerp"):
        check_parameter_names(load_recipe(bad))


def test_help_text_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    """Square brackets in help text are text, not rich markup ("(extra )" before)."""
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert (info.value.code or 0) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(extra [dashboard])" in out and "eval" in out
