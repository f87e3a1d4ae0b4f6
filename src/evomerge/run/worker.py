"""The part of a search that touches models: every input's tensors held once on the compute
device, one live model merged in place, the evaluator and the tasks.

An ``EvalWorker`` lives in the search process (the local backend) or in each Ray actor (the
ray backend); either way it turns (recipe, items, split) into per-item results and never
sees the run store, the estimators or the optimizer.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from evomerge.config import EvolveConfig
from evomerge.device import resolve_device
from evomerge.eval.evaluator import Evaluator
from evomerge.eval.prompts import render
from evomerge.eval.sources import load_task_pair
from evomerge.eval.sources.lm_eval import lm_eval_task
from evomerge.io.checkpoint import TensorDictSource, close_source, require_finite
from evomerge.io.hf import live_names, load_causal_lm, load_tokenizer
from evomerge.io.lora import open_model
from evomerge.merge.live import LiveMerger
from evomerge.merge.stack import LiveStacker
from evomerge.merge.vocab import aligned_inputs
from evomerge.recipe import MergeRecipe

if TYPE_CHECKING:
    pass


class EvalWorker:
    def __init__(self, config: EvolveConfig, threads: int | None = None) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        self.device = resolve_device(config.device)
        dtype = getattr(torch, config.dtype)
        names = [config.base_model, *config.models]
        opened = {m: open_model(m) for m in names}
        checkpoints, vocab = aligned_inputs(config.tokenizer_source, names, config.base_model,
                                            opened)
        renamed = live_names(config.base_model, opened[config.base_model])  # headers only
        keep_on = torch.device("cpu") if config.offload else self.device
        self.sources = {}
        for name, ck in checkpoints.items():
            # checked once here: a NaN would poison every candidate
            self.sources[name] = TensorDictSource(
                {k: require_finite(ck.get(k), k, name).to(keep_on, dtype) for k in ck.names()},
                name, ck.config)
            if vocab is None:  # its mapped pages go now (aligned rows need every model)
                close_source(opened[name])
        if vocab is not None:
            for source in opened.values():
                close_source(source)
        self.tokenizer = vocab.tokenizer if vocab else load_tokenizer(config.base_model)
        self.model = load_causal_lm(config.base_model, dtype)
        if vocab is not None:  # the live model takes the merged vocabulary's rows
            self.model.resize_token_embeddings(vocab.size, mean_resizing=False)
        self.model = self.model.to(self.device)
        self.evaluator = Evaluator(self.model, self.tokenizer, batch_size=config.batch_size)
        self.merger = LiveMerger(self.model, self.sources, dtype=dtype, seed=config.seed,
                                 offload=config.offload, renamed=renamed,
                                 statistics_dir=Path(config.run_dir) / "statistics")
        self.tasks = {t.name: load_task_pair(t) for t in config.tasks}
        for pair in self.tasks.values():  # prompt settings (a chat template the tokenizer
            for task in pair:  # lacks, a few-shot pool too small) fail here, before any work
                if task.items:
                    render(task, task.items[0], self.tokenizer)
        self.lm_eval = {t.name: lm_eval_task(t) for t in config.tasks if t.lm_eval}
        self._lms: dict[int, Any] = {}  # id(live model) -> lm-eval's HFLM wrapping it
        self.config, self.dtype = config, dtype
        self.stacker: LiveStacker | None = None
        self.stack_evaluator: Evaluator | None = None
        self._loaded_recipe: str | None = None
        self._reported: dict[int, int] = {}  # id(evaluator) -> its notes already recorded

    def _stacker(self) -> tuple[LiveStacker, Evaluator]:
        """Layer-stacking candidates (the dis space): every input model as a module, once,
        and a shell model whose layer list is rebuilt from theirs per candidate."""
        if self.stacker is None:
            def load(path: str) -> torch.nn.Module:
                return load_causal_lm(path, self.dtype).to(self.device).eval()

            models = {m: load(m) for m in [self.config.base_model, *self.config.models]}
            self.stacker = LiveStacker(models, load(self.config.base_model))
            self.stack_evaluator = Evaluator(self.stacker.shell, self.tokenizer,
                                             batch_size=self.config.batch_size)
        assert self.stack_evaluator is not None
        return self.stacker, self.stack_evaluator

    def _load(self, recipe: MergeRecipe) -> tuple[float, Evaluator]:
        """Put ``recipe`` in a live model; returns the seconds it took and its evaluator."""
        text = recipe.model_dump_json()
        stacked = recipe.merge_method == "passthrough" and bool(recipe.slices)
        if stacked:
            stacker, evaluator = self._stacker()
        if text == self._loaded_recipe:
            return 0.0, evaluator if stacked else self.evaluator
        seconds = stacker.apply(recipe) if stacked else self.merger.apply(recipe)
        self._loaded_recipe = text
        return seconds, evaluator if stacked else self.evaluator

    def _lm(self, evaluator: Evaluator) -> Any:
        """lm-eval's HF model wrapper around the evaluator's live model (weights swapped in
        place are what lm-eval sees)."""
        key = id(evaluator.model)
        if key not in self._lms:
            from evomerge.eval.lm_eval_adapter import _import

            hflm = _import()[1]
            self._lms[key] = hflm(pretrained=evaluator.model, tokenizer=self.tokenizer,
                                  batch_size=self.config.batch_size)
        return self._lms[key]

    def run(self, recipe: dict[str, Any], items: dict[str, list[str] | None], split: str
            ) -> dict[str, Any]:
        """Merge ``recipe`` into the live model and evaluate it on ``items`` of every task
        (None: the whole split)."""
        merge_s, evaluator = self._load(MergeRecipe.model_validate(recipe))
        start = time.perf_counter()
        results = {}
        for name, (search, test) in self.tasks.items():
            if name in self.lm_eval:
                res = self.lm_eval[name].evaluate(self._lm(evaluator), split, items.get(name))
            else:
                res = evaluator(search if split == "search" else test, items.get(name))
            results[name] = {"ids": res.ids, "correct": res.correct.astype(int).tolist(),
                             "accuracy": res.accuracy}
        out: dict[str, Any] = {"tasks": results, "seconds": {
            "merge": merge_s, "eval": time.perf_counter() - start}}
        # what the evaluator adapted during this evaluation (a batch lowered after running
        # out of device memory) goes into the record, and from there into the run's report
        notes = evaluator.notes[self._reported.get(id(evaluator), 0):]
        if notes:
            self._reported[id(evaluator)] = len(evaluator.notes)
            out["notes"] = list(notes)
            out["batch_size"] = evaluator.batch_size  # the size the evaluator went on with
        return out

