"""The memory plan: its parts equal what a search really holds, it is printed by `evomerge
evolve`, and a plan that cannot fit stops the run before anything is loaded or written.
(Its total against the measured peak of real 135M searches: benchmarks/memory_plan.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from evomerge.config import load_config
from evomerge.memory import GB

from .test_evolve import config


def _bytes(tensors: object) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)  # type: ignore[attr-defined]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_plan_parts_equal_what_the_search_holds(tiny_zoo: Path, tmp_path: Path,
                                               dtype: str) -> None:
    from evomerge.run.loop import Runner
    from evomerge.run.worker import EvalWorker

    cfg = load_config(config(tiny_zoo, tmp_path / "run", dtype=dtype))
    runner = Runner(cfg, tmp_path / "run")
    parts = runner.memory.parts["host"]
    worker = EvalWorker(cfg)
    held = _bytes(t for s in worker.sources.values() for t in s.tensors.values())
    assert parts["inputs"] == held
    assert parts["live model"] == _bytes(worker.model.parameters())
    worker.merger.apply(runner.space.to_recipe(runner.space.endpoints()[0]))
    assert parts["task vectors"] == _bytes(worker.merger._deltas.values())
    runner.backend.close()


def test_evolve_prints_the_plan(tiny_zoo: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    from evomerge.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config(tiny_zoo, tmp_path / "run", optimizer={
        "name": "ga", "pop_size": 4, "generations": 1}, fitness={"subset_size": 10,
                                                                 "estimator": "mean"})))
    with pytest.raises(SystemExit) as info:
        main(["evolve", str(path), "-q"])
        raise SystemExit(0)
    assert info.value.code in (0, None)
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("memory plan: host "))
    for part in ("runtime", "live model", "inputs", "task vectors", "evaluation"):
        assert part in line


def test_a_plan_that_cannot_fit_stops_before_loading_anything(
        tiny_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A smaller machine than this one: the free memory is what cannot exist here."""
    import evomerge.run.loop as loop
    import evomerge.run.worker as worker

    from .test_cli import run_cli

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config(tiny_zoo, tmp_path / "run")))
    runner = loop.Runner(load_config(path), tmp_path / "probe")
    need = runner.memory.total("host")
    half = need - runner.memory.parts["host"]["inputs"] // 3  # bfloat16 fits, float32 not
    runner.backend.close()
    monkeypatch.setattr(loop, "available", lambda device: half)
    loaded: list[str] = []
    monkeypatch.setattr(worker, "load_causal_lm", lambda *a, **k: loaded.append("x"))
    code, err = run_cli(["evolve", str(path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"needs {need / GB:.1f} GB on the host" in err
    assert "it would fit with dtype: bfloat16" in err
    assert not (tmp_path / "run").exists() and not loaded
    # memory_check: false runs anyway
    path.write_text(yaml.safe_dump(config(tiny_zoo, tmp_path / "run", memory_check=False,
                                          optimizer={"name": "ga", "pop_size": 4,
                                                     "generations": 1})))
    monkeypatch.undo()
    monkeypatch.setattr(loop, "available", lambda device: half)
    code, err = run_cli(["evolve", str(path), "-q"], capsys)
    assert code == 0, err


def test_plans_for_7b_and_8b_models_match_their_size() -> None:
    """Hand arithmetic for Llama-2-7B (6.74e9 parameters) in bfloat16 on a GPU, base + two
    models, task arithmetic: inputs 3 x 13.5 GB, task vectors 2 x 13.5 GB, live model 13.5."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from evomerge.io.checkpoint import TensorDictSource
    from evomerge.memory import search_plan

    shape = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                 num_hidden_layers=32, num_attention_heads=32, tie_word_embeddings=False)
    with torch.device("meta"):
        state = AutoModelForCausalLM.from_config(LlamaConfig(**shape)).state_dict()
    sources = {m: TensorDictSource(state, m, shape) for m in ("base", "a", "b")}
    plan = search_plan(sources, device="cuda", dtype="bfloat16", offload=False,
                       reuses_task_vectors=True, batch_size=1, seq_len=1)
    params = 6_738_415_616
    assert plan.parts["device"]["inputs"] == 3 * params * 2
    assert plan.parts["device"]["task vectors"] == 2 * params * 2
    assert plan.parts["device"]["live model"] == params * 2
    offloaded = search_plan(sources, device="cuda", dtype="bfloat16", offload=True,
                            reuses_task_vectors=True, batch_size=1, seq_len=1)
    assert "inputs" not in offloaded.parts["device"]
    assert offloaded.parts["host"]["inputs"] == 3 * params * 2
