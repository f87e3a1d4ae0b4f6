"""The CUDA paths against the CPU: merging on disk and live, evaluation, a real out-of-memory,
the automatic batch size, a whole search and np-merge. Skipped where no GPU is there (CI);
run on a GPU machine with ``pytest tests/test_cuda.py`` (results in docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from evomerge.io.checkpoint import Checkpoint
from evomerge.merge.planner import MergePlan
from evomerge.recipe import load_recipe

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

METHODS = [
    ("linear", [{"weight": 0.3}, {"weight": 0.9}], {}),
    ("task_arithmetic", [{"weight": 0.7}, {"weight": 1.3}], {}),
    ("ties", [{"weight": 1.0, "density": 0.4}, {"weight": 0.5, "density": 0.6}], {}),
    ("dare_ties", [{"weight": 1.0, "density": 0.4}, {"weight": 0.5, "density": 0.6}], {}),
    ("della", [{"weight": 1.0, "density": 0.4, "epsilon": 0.1},
               {"weight": 0.5, "density": 0.6, "epsilon": 0.1}], {}),
    ("slerp", None, {"t": 0.3}),
    ("tsv", [{}, {}], {"lambda": 1.0}),
    ("karcher", [{}, {}], {}),
]


def _recipe(llama: list[Path], method: str, params: list[dict] | None, shared: dict):
    base, ft1, ft2 = (str(p) for p in llama)
    if method == "slerp":
        return load_recipe({"merge_method": "slerp", "base_model": base,
                            "models": [{"model": base}, {"model": ft1}], "parameters": shared})
    models = [{"model": m, "parameters": p} for m, p in zip((ft1, ft2), params, strict=True)]
    if method == "karcher":
        models.insert(0, {"model": base, "parameters": {}})
    return load_recipe({"merge_method": method,
                        **({} if method == "linear" else {"base_model": base}),
                        "models": models, "parameters": shared})


@pytest.mark.parametrize("method, params, shared", METHODS)
def test_a_merge_on_cuda_equals_the_merge_on_the_cpu(llama: list[Path], method: str,
                                                    params: list[dict] | None,
                                                    shared: dict) -> None:
    """Seeded methods too: DARE's and DELLA's random draws are made on the CPU, so a recipe a
    GPU search found merges to the same model wherever it is exported."""
    recipe = _recipe(llama, method, params, shared)
    sources = {m: Checkpoint(m) for m in recipe.referenced_models()}
    cpu = MergePlan.build(recipe, sources, seed=5).merge_to_dict("cpu")
    gpu = MergePlan.build(recipe, sources, seed=5).merge_to_dict("cuda")
    assert cpu.keys() == gpu.keys()
    for name, t in cpu.items():
        assert gpu[name].device.type == "cuda"
        scale = float(t.abs().max()) or 1.0
        torch.testing.assert_close(gpu[name].cpu(), t, rtol=0, atol=1e-5 * scale, msg=name)


@pytest.mark.parametrize("offload", [False, True])
def test_live_merge_on_cuda_equals_the_cpu_plan(llama: list[Path], offload: bool) -> None:
    from transformers import AutoModelForCausalLM

    from evomerge.merge.live import LiveMerger

    for method, params, shared in METHODS[1:4]:
        recipe = _recipe(llama, method, params, shared)
        sources = {m: Checkpoint(m) for m in recipe.referenced_models()}
        expected = MergePlan.build(recipe, sources, seed=3).merge_to_dict()
        model = AutoModelForCausalLM.from_pretrained(llama[0]).cuda()
        merger = LiveMerger(model, sources, seed=3, offload=offload)
        merger.apply(recipe)
        state = model.state_dict()
        for name, t in expected.items():
            torch.testing.assert_close(state[name].cpu(), t, rtol=1e-5, atol=1e-5)
        assert merger.last_rewritten == len(expected)


def _zoo_model_and_task():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.eval.tasks import Item, Task
    from evomerge.zoo.data import task_items
    from evomerge.zoo.manifest import ZOO_DIR

    path = ZOO_DIR / "math_en"
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    items = task_items("add_en", "search") + task_items("add_it", "search")
    task = Task("add", tuple(Item(it.id, it.prompt, it.answer) for it in items), stop=("\n",))
    return model, tok, task


def test_evaluation_on_cuda_gives_the_cpu_answers() -> None:
    from evomerge.eval import Evaluator

    model, tok, task = _zoo_model_and_task()
    cpu = {m: Evaluator(model, tok, batch_size=32)(task, method=m)
           for m in ("generate", "teacher_forced")}
    model.cuda()
    for m, ref in cpu.items():
        got = Evaluator(model, tok, batch_size=32)(task, method=m)
        assert 0.05 < ref.accuracy < 0.95  # a mix of right and wrong answers
        same = np.mean([a == b for a, b in zip(got.outputs, ref.outputs, strict=True)])
        assert same >= 0.99, (m, same)
        assert abs(got.accuracy - ref.accuracy) <= 2 / len(task.items)
    # the two methods agree on the GPU as they do on the CPU
    gen = Evaluator(model, tok)(task, method="generate")
    tf = Evaluator(model, tok)(task, method="teacher_forced")
    assert np.mean(gen.correct == tf.correct) >= 0.99


def test_a_real_out_of_memory_halves_the_batch_and_keeps_the_answers() -> None:
    """The GPU is capped (``set_per_process_memory_fraction``) so that about 24 rows fit:
    a batch of 256 really runs out of CUDA memory, the evaluator halves it until it fits,
    and the answers equal a batch size that fitted from the start."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from evomerge.eval import Evaluator
    from evomerge.eval.tasks import Item, Task
    from evomerge.zoo.train import word_tokenizer

    tok = word_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=32000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, pad_token_id=0)).cuda().eval()
    rng = np.random.default_rng(0)
    words = list(tok.get_vocab())
    items = tuple(Item(str(i), " ".join(rng.choice(words, 60)), "c",
                       choices=("a b", "c", "d e f", "g"))
                  for i in range(256))
    task = Task("mc", items, kind="multiple_choice")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    expected = Evaluator(model, tok, batch_size=8)(task)
    per_row = (torch.cuda.max_memory_allocated() - base) / 8
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction((base + 24 * per_row) / total)
    try:
        torch.cuda.empty_cache()
        ev = Evaluator(model, tok, batch_size=256)
        got = ev(task)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert got.outputs == expected.outputs
    assert 2 <= ev.batch_size <= 16, ev.notes
    assert ev.notes[0] == "out of device memory: batch size lowered to 128"


def test_auto_batch_size_on_cuda_and_a_whole_search(tmp_path: Path) -> None:
    """The demo search on the GPU with ``batch_size: auto``: the batch comes from the free
    GPU memory, and the search finds a merge as good as the CPU's (the demo's own bar)."""
    from evomerge.run.demo import demo_config
    from evomerge.run.loop import evolve

    cfg = demo_config(tmp_path / "gpu").model_copy(update={
        "device": "cuda", "batch_size": "auto", "write_best": False})
    lines: list[str] = []
    result = evolve(cfg, log=lines.append)
    chosen = [line for line in lines if line.startswith("batch_size auto:")]
    assert len(chosen) == 1 and int(chosen[0].split()[2]) == 256, chosen  # the cap: tiny model
    best = result.test["best"]["add_it"]
    assert all(best >= result.test[m]["add_it"] + 0.10 for m in ("base", "math_en", "lang_it"))


def test_np_merge_on_cuda_learns_what_it_learns_on_the_cpu(tmp_path: Path) -> None:
    from evomerge.config import NPMergeConfig
    from evomerge.npmerge.job import np_merge
    from evomerge.zoo.manifest import ZOO_DIR

    def run(device: str):
        cfg = NPMergeConfig.model_validate({
            "models": [str(ZOO_DIR / "math_en"), str(ZOO_DIR / "lang_it")],
            "data": {"zoo": "add_it", "split": "search", "limit": 48},
            "steps": 8, "lr": 0.05, "batch_size": 16, "device": device,
            "validation_fraction": 0, "output": str(tmp_path / device)})
        return np_merge(cfg)

    cpu, gpu = run("cpu"), run("cuda")
    assert gpu.losses[-1] < gpu.losses[0]
    np.testing.assert_allclose(gpu.losses, cpu.losses, rtol=1e-3)
    a = Checkpoint(tmp_path / "cpu")
    b = Checkpoint(tmp_path / "cuda")
    for name in a.names():
        torch.testing.assert_close(b.get(name), a.get(name), rtol=1e-3, atol=1e-3)


def test_data_dependent_statistics_on_cuda_equal_the_cpu(tmp_path: Path) -> None:
    from evomerge.merge.disk import merge_to_disk
    from evomerge.zoo.manifest import ZOO_DIR

    recipe = load_recipe({
        "merge_method": "regmean", "base_model": str(ZOO_DIR / "base"),
        "models": [{"model": str(ZOO_DIR / "math_en")}, {"model": str(ZOO_DIR / "lang_it")}],
        "data": {"zoo": "add_it", "split": "search", "limit": 32}})
    for device in ("cpu", "cuda"):
        merge_to_disk(recipe, tmp_path / device, device=device,
                      statistics_dir=tmp_path / f"stats-{device}")
    a, b = Checkpoint(tmp_path / "cpu"), Checkpoint(tmp_path / "cuda")
    for name in a.names():
        t = a.get(name)
        scale = float(t.float().abs().max()) or 1.0
        # to 1e-4 of the tensor's scale, or one unit in the last place of the output dtype
        # (the zoo is float16: a solve on another device may round the other way)
        torch.testing.assert_close(b.get(name).float(), t.float(),
                                   rtol=torch.finfo(t.dtype).eps, atol=1e-4 * scale)

