"""Model + task -> per-item correctness: the one thing estimators and search consume.

An ``Evaluator`` holds one live model and its tokenizer; the search loop swaps weights in
place between calls, and prompts are tokenized once per task and reused for every candidate.
Generation is greedy (transformers' ``generate``: batched, left padding, stops as soon as every
sequence has finished). Exact-match generative tasks have a fast path that feeds the reference
answer under teacher forcing in one forward pass and reads off, token by token, what greedy
decoding would produce. Where that decides the verdict (the model reproduces the answer and
stops, or departs from it in a way no continuation can repair) it is the verdict generation
gives; where it cannot (the model chose another spelling of the same text: other whitespace,
another tokenization), that item is generated. So the fast path agrees with generation by
construction, whatever the tokenizer or whitespace convention of the answers; and the first
time a task is scored this way, a few items are also generated as a check (a disagreement
switches the task to generation, with a note).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from evomerge.errors import ConfigError, EvomergeError
from evomerge.eval.extract import get_rule, matches
from evomerge.eval.prompts import continuation, render
from evomerge.eval.tasks import Item, Task

Method = Literal["auto", "generate", "teacher_forced"]


@dataclass
class EvalResult:
    """Per-item results aligned to ``ids``."""

    task: str
    ids: list[str]
    correct: np.ndarray  # bool, one per id
    outputs: list[str]  # generated text (after stop strings) or the chosen choice
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self.correct) else float("nan")

    def as_dict(self) -> dict[str, bool]:
        return dict(zip(self.ids, self.correct.tolist(), strict=True))


class Evaluator:
    """Evaluates one live model on tasks; reuse it across weight updates."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, batch_size: int = 16,
                 acc: Literal["acc", "acc_norm"] = "acc", max_batch_tokens: int = 16384,
                 packed: bool = True) -> None:
        """``batch_size`` items at most per forward pass, and at most ``max_batch_tokens``
        padded tokens (prompt + continuation or new tokens), so one long item cannot blow up
        a batch's memory."""
        self.model = model
        self.tok = tokenizer
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.packed = packed  # multiple choice: all choices of an item in one row
        config = getattr(model, "config", None)
        self.context = next((getattr(config, k) for k in (
            "max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
            if isinstance(getattr(config, k, None), int)), None)
        self.acc = acc
        if getattr(tokenizer, "pad_token_id", None) is None:
            tokenizer.pad_token = tokenizer.eos_token
        # token caches keyed by everything that changes the tokens (the texts themselves)
        self._prompts: dict[tuple[str, bool], list[int]] = {}
        self._answers: dict[tuple[str, ...], list[int]] = {}
        self._rendered: dict[tuple[Any, ...], tuple[str, bool]] = {}
        self._render_key: tuple[Any, Any] = (None, ())  # (last task, what render reads)
        self._checked: dict[tuple[Any, ...], bool] = {}  # task -> fast path agreed
        self.check_items = 8  # items generated to check the fast path, once per task
        self.notes: list[str] = []  # what was adapted on the way (a lowered batch size)
        self._keep_arg: str | None = None  # the model's logits_to_keep argument ("": none)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- public ----------------------------------------------------------------------------
    def __call__(self, task: Task, item_ids: Sequence[str] | None = None,
                 method: Method = "auto") -> EvalResult:
        """The task's items scored; a batch that runs out of device memory halves the batch
        size (and the token budget) and the call starts again, down to one item."""
        while True:
            try:
                return self._evaluate(task, item_ids, method)
            except torch.cuda.OutOfMemoryError:  # what CUDA raises (an OutOfMemoryError)
                if self.batch_size <= 1:
                    raise EvomergeError(
                        f"evaluating {task.name!r} runs out of device memory even one item "
                        "at a time: use a larger device, dtype: bfloat16 or offload: true"
                    ) from None
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self.batch_size = max(1, self.batch_size // 2)
                self.max_batch_tokens = max(1, self.max_batch_tokens // 2)
                self.notes.append(f"out of device memory: batch size lowered to "
                                  f"{self.batch_size}")

    def _evaluate(self, task: Task, item_ids: Sequence[str] | None,
                  method: Method) -> EvalResult:
        items = list(task.subset(item_ids).items) if item_ids is not None else list(task.items)
        if task.kind == "multiple_choice":
            correct, outputs = self._multiple_choice(task, items)
        else:
            if method == "auto":
                method = ("teacher_forced" if task.extract == "exact" and task.language is None
                          else "generate")
            if method == "teacher_forced":
                if task.extract != "exact" or task.language is not None:
                    raise ConfigError("the teacher-forced fast path needs extract: exact and no "
                                      "language check")
                correct, outputs = self._fast_path(task, items)
            else:
                correct, outputs = self._generate(task, items)
        return EvalResult(task=task.name, ids=[it.id for it in items],
                          correct=np.asarray(correct, dtype=bool), outputs=outputs)

    # -- encoding (cached per task and item) -----------------------------------------------
    def _render(self, task: Task, item: Item) -> tuple[str, bool]:
        """``prompts.render``, cached under what it reads (the prompt settings, the few-shot
        pool, the item): a chat template or a few-shot draw per item and candidate costs
        more than a lookup (23 ms per 240 chat prompts on this CPU)."""
        if self._render_key[0] is not task:  # once per call: the pool is hashed here
            self._render_key = (task, (
                task.chat, task.system, task.fewshot, task.fewshot_seed,
                task.fewshot_delimiter, task.target_delimiter,
                hash(task.fewshot_pool) if task.fewshot else 0))
        key = (self._render_key[1], item.id, item.prompt)
        out = self._rendered.get(key)
        if out is None:
            out = self._rendered[key] = render(task, item, self.tok)
        return out

    def _encode(self, text: str, special: bool) -> list[int]:
        key = (text, special)
        ids = self._prompts.get(key)
        if ids is None:
            ids = self._prompts[key] = self.tok(text, add_special_tokens=special)["input_ids"]
        return ids

    def _prompt_ids(self, task: Task, item: Item, reserve: int = 1) -> list[int]:
        """The prompt's tokens, leaving ``reserve`` positions of the model's context free for
        the continuation: longer prompts are refused or cut from the left (``truncate``)."""
        ids = self._encode(*self._render(task, item))
        if self.context is not None and len(ids) + reserve > self.context:
            room = self.context - reserve
            if task.truncate != "left" or room < 1:
                raise ConfigError(
                    f"task {task.name!r} item {item.id!r}: the prompt is {len(ids)} tokens and "
                    f"needs {reserve} more, beyond the model's context of {self.context}; "
                    "shorten it or set the task option truncate: left")
            ids = ids[-room:]
        return ids

    def _chunks(self, widths: list[int]) -> list[tuple[int, int]]:
        """[start, end) batches, in order, of at most ``batch_size`` rows and
        ``max_batch_tokens`` padded tokens (``widths``: each row's length)."""
        out, start, widest = [], 0, 0
        for i, w in enumerate(widths):
            widest_with = max(widest, w)
            n = i - start
            if n and (n >= self.batch_size or widest_with * (n + 1) > self.max_batch_tokens):
                out.append((start, i))
                start, widest_with = i, w
            widest = widest_with
        if start < len(widths):
            out.append((start, len(widths)))
        return out

    def _continuation_ids(self, task: Task, item: Item, text: str) -> list[int]:
        """A choice's tokens after the delimiter (lm-eval's loglikelihood request)."""
        # the answer starts the assistant's turn in a chat prompt: no delimiter there
        plain = _word_level(self.tok) or task.chat
        full = text if plain else task.target_delimiter + text
        key = ("choice", full)
        ids = self._answers.get(key)
        if ids is None:
            ids = self._answers[key] = self.tok(full, add_special_tokens=False)["input_ids"]
        return ids

    def _reference_ids(self, task: Task, item: Item) -> list[int]:
        """The tokens greedy decoding most likely writes for a right answer, right after the
        prompt: the answer after the delimiter, one whitespace between them whichever side
        carries it (answers written " hiss" are not scored as "  hiss"), tokenized together
        with the prompt and split off (lm-eval's way; SentencePiece spells a word after a
        space differently from a word on its own); ``prompts.continuation``. Only a guess
        that saves generating: the verdict never depends on it (``_verdict``)."""
        text, special = self._render(task, item)
        cont = item.answer if _word_level(self.tok) else continuation(task, text, item.answer)
        key = ("reference", text, str(special), cont)
        ids = self._answers.get(key)
        if ids is None:
            prompt = self._encode(text, special)
            whole = self.tok(text + cont, add_special_tokens=special)["input_ids"]
            if len(whole) > len(prompt) and whole[:len(prompt)] == prompt:
                ids = whole[len(prompt):]
            else:  # the prompt's last token merged with the answer: encode it alone
                ids = self.tok(cont, add_special_tokens=False)["input_ids"]
            self._answers[key] = ids
        return ids

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        n = max(len(r) for r in rows)
        ids = torch.full((len(rows), n), self.tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, n - len(r):] = torch.tensor(r)
            mask[i, n - len(r):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, keep: int) -> torch.Tensor:
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return self._logits(keep, input_ids=ids, attention_mask=mask, position_ids=pos)

    def _logits(self, keep: int, **inputs: torch.Tensor) -> torch.Tensor:
        """Logits of the last ``keep`` positions only (rows are left-padded, so answers end
        every row). Scoring needs a few answer positions, and the head's vocabulary-wide
        matrix product, softmax and copy to the host dominate everything else on large
        vocabularies: on a GPU, copying all positions' log-probabilities to the host cost
        more than the forward pass (docs/benchmarks.md)."""
        # no KV cache either: scoring runs one forward pass, and a cache would hold every
        # layer's keys and values for every position until the pass ends
        return self.model(**inputs, use_cache=False,
                          **self._keep_kwargs(keep)).logits[:, -keep:]

    def _keep_kwargs(self, keep: int) -> dict[str, int]:
        """The model's argument for computing the last ``keep`` positions' logits only
        (transformers 4.45-4.49: ``num_logits_to_keep``), if it has one."""
        if self._keep_arg is None:
            import inspect

            names = inspect.signature(self.model.forward).parameters
            self._keep_arg = next((a for a in ("logits_to_keep", "num_logits_to_keep")
                                   if a in names), "")
        return {self._keep_arg: keep} if self._keep_arg else {}

    # -- generative ------------------------------------------------------------------------
    @torch.no_grad()
    def _generate(self, task: Task, items: list[Item]) -> tuple[list[bool], list[str]]:
        rule = get_rule(task.extract)
        correct: list[bool] = [False] * len(items)
        outputs: list[str] = [""] * len(items)
        self.model.eval()
        prompts = [self._prompt_ids(task, it) for it in items]
        # longest first (lm-eval's order): batches of similar length pad least; greedy
        # decoding gives each row the same tokens whatever its batch
        order = sorted(range(len(items)), key=lambda k: -len(prompts[k]))
        for start, end in self._chunks([len(prompts[k]) + task.max_new_tokens for k in order]):
            batch = order[start:end]
            ids, mask = self._left_pad([prompts[k] for k in batch])
            kwargs: dict[str, Any] = dict(max_new_tokens=task.max_new_tokens, do_sample=False,
                                          pad_token_id=self.tok.pad_token_id)
            if task.stop:
                kwargs["stopping_criteria"] = _stop_criteria(self.tok, task.stop, ids.shape[1])
            rows = self.model.generate(input_ids=ids, attention_mask=mask,
                                       **kwargs)[:, ids.shape[1]:]
            for k, row in zip(batch, rows, strict=True):
                it = items[k]
                text = self.tok.decode(row, skip_special_tokens=True)
                text = _cut_at_stop(text, task.stop)
                ok = matches(rule(text, task.regex), it.answer, task.extract)
                if ok and task.language is not None:
                    ok = detect_language(text) == task.language
                correct[k] = ok
                outputs[k] = text
        return correct, outputs

    def _eos_ids(self) -> set[int]:
        """The tokens that end generation: the tokenizer's and the generation config's."""
        ids = {self.tok.eos_token_id}
        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
        return {i for i in ids if i is not None}

    def _fast_path(self, task: Task, items: list[Item]) -> tuple[list[bool], list[str]]:
        """The teacher-forced path, checked: the first time a task is scored this way, its
        first ``check_items`` items are also generated; on any disagreement the task is
        generated from then on, said once in ``notes``. (``_verdict`` makes them agree by
        construction; this checks that, on the user's own tokenizer, the construction
        held.)"""
        key = (task.name, task.target_delimiter, task.chat, task.stop, task.max_new_tokens,
               task.fewshot, task.system)
        agreed = self._checked.get(key)
        if agreed is False:
            return self._generate(task, items)
        correct, outputs = self._teacher_forced(task, items)
        if agreed is None:
            n = self.check_items
            slow, texts = self._generate(task, items[:n])
            agreed = self._checked[key] = correct[:n] == slow
            if not agreed:
                k = next(i for i, (a, b) in enumerate(zip(correct[:n], slow, strict=True))
                         if a != b)
                self.notes.append(
                    f"task {task.name!r}: the teacher-forced fast path and generation disagreed"
                    f" on item {items[k].id!r} (generated {texts[k]!r}, reference "
                    f"{items[k].answer!r}): the task is scored by generation")
                rest, rest_texts = self._generate(task, items[n:])
                return slow + rest, texts + rest_texts
        return correct, outputs

    @torch.no_grad()
    def _teacher_forced(self, task: Task, items: list[Item]) -> tuple[list[bool], list[str]]:
        """Greedy decoding read off one forward pass over prompt + reference: the model's
        argmax follows the reference until it departs from it, and what it wrote up to there
        usually settles the verdict (``_verdict``). Items it does not settle are generated."""
        eos = self._eos_ids()
        correct: list[bool] = [False] * len(items)
        outputs: list[str] = [""] * len(items)
        self.model.eval()
        answers = [self._reference_ids(task, it)[: task.max_new_tokens] for it in items]
        rows = [self._prompt_ids(task, it, len(a) + 1) + a
                for it, a in zip(items, answers, strict=True)]
        order = sorted(range(len(items)), key=lambda k: -len(rows[k]))
        unsettled: list[int] = []
        for start, end in self._chunks([len(rows[k]) for k in order]):
            batch = order[start:end]
            ids, mask = self._left_pad([rows[k] for k in batch])
            keep = max(len(answers[k]) for k in batch) + 1
            pred = self._forward(ids, mask, keep).argmax(-1).cpu()
            for b, k in enumerate(batch):
                a = answers[k]
                first = keep - len(a) - 1  # position predicting the first answer token
                got = pred[b, first:].tolist()  # len(a) + 1 predictions
                verdict = _verdict(self.tok, task, items[k].answer, a, got, eos)
                if verdict is None:
                    unsettled.append(k)
                else:
                    correct[k], outputs[k] = verdict
        if unsettled:  # another spelling of what may be the answer: generate those
            ok, texts = self._generate(task, [items[k] for k in unsettled])
            for k, c, t in zip(unsettled, ok, texts, strict=True):
                correct[k], outputs[k] = c, t
        return correct, outputs

    @torch.no_grad()
    def _multiple_choice(self, task: Task, items: list[Item]) -> tuple[list[bool], list[str]]:
        """Each choice's summed log-likelihood after the prompt; the highest wins."""
        conts = [[self._continuation_ids(task, it, c) for c in it.choices or ()]
                 for it in items]
        ctxs = [self._prompt_ids(task, it, max(len(c) for c in cs))
                for it, cs in zip(items, conts, strict=True)]
        self.model.eval()
        scores = (self._choice_scores_packed(ctxs, conts) if self._packed_ok()
                  else self._choice_scores_rows(ctxs, conts))
        correct, outputs = [], []
        for it, ll in zip(items, scores, strict=True):
            if self.acc == "acc_norm":
                ll = [x / max(1, len(c.encode())) for x, c in zip(ll, it.choices or (),
                                                                   strict=True)]
            best = int(np.argmax(ll))
            correct.append(best == it.gold)
            outputs.append(it.choices[best])  # type: ignore[index]
        return correct, outputs

    def _packed_ok(self) -> bool:
        """Packed scoring needs attention that takes a custom 4-D mask."""
        impl = getattr(getattr(self.model, "config", None), "_attn_implementation", None)
        return self.packed and impl in ("sdpa", "eager")

    def _choice_scores_packed(self, ctxs: list[list[int]], conts: list[list[list[int]]]
                              ) -> list[list[float]]:
        """The prompt once and every choice after it in one row: choice j's tokens (all but
        its last, whose prediction comes from the one before) see the prompt and their own
        earlier tokens only, at the positions they would have right after the prompt. So
        one forward pass per item scores all its choices (single-token choices cost nothing
        beyond the prompt), and rows are batched longest first, as few pads as possible."""
        rows = []
        for ctx, cs in zip(ctxs, conts, strict=True):
            rows.append(ctx + [t for c in cs for t in c[:-1]])
        order = sorted(range(len(rows)), key=lambda k: -len(rows[k]))
        out: list[list[float]] = [[] for _ in rows]
        for start, end in self._chunks([len(rows[k]) for k in order]):
            batch = order[start:end]
            width = max(len(rows[k]) for k in batch)
            # rows are left-padded, so every row's choices end at the last position and the
            # logits of the last ``keep`` positions hold all the predictions scoring needs
            keep = max(len(rows[k]) - len(ctxs[k]) + 1 for k in batch)
            first = width - keep  # the first kept position
            n = len(batch)
            ids = torch.full((n, width), self.tok.pad_token_id, dtype=torch.long)
            pos = torch.zeros((n, width), dtype=torch.long)
            allow = torch.zeros((n, width, width), dtype=torch.bool)
            picks: list[list[tuple[int, int, int]]] = []  # per choice: (row, kept position, id)
            choice_rows: list[int] = []  # the batch row of every choice, in order
            for b, k in enumerate(batch):
                ctx, cs = ctxs[k], conts[k]
                m, o = len(ctx), width - len(rows[k])  # prompt length, padding before the row
                ids[b, o:] = torch.tensor(rows[k])
                pos[b, o: o + m] = torch.arange(m)
                allow[b, o: o + m, o: o + m] = torch.tril(torch.ones(m, m, dtype=torch.bool))
                for p in range(o):  # padding attends to itself only
                    allow[b, p, p] = True
                at = o + m
                for c in cs:
                    seg = len(c) - 1
                    pos[b, at: at + seg] = torch.arange(m, m + seg)
                    allow[b, at: at + seg, o: o + m] = True
                    allow[b, at: at + seg, at: at + seg] = torch.tril(
                        torch.ones(seg, seg, dtype=torch.bool))
                    picks.append([(b, q - first, t) for q, t in zip(
                        [o + m - 1, *range(at, at + seg)], c, strict=True)])
                    choice_rows.append(k)
                    at += seg
            if self.model.config._attn_implementation == "sdpa":
                mask = allow[:, None]  # torch's SDPA takes a boolean mask: 1 byte per entry
            else:  # eager attention adds the mask to the scores
                dtype = next(self.model.parameters()).dtype
                mask = torch.zeros((n, 1, width, width), dtype=dtype)
                mask.masked_fill_(~allow[:, None], torch.finfo(dtype).min)
            logits = self._logits(keep, input_ids=ids.to(self.device),
                                  attention_mask=mask.to(self.device),
                                  position_ids=pos.to(self.device))
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            for k, values in zip(choice_rows, _gather(logprobs, picks), strict=True):
                out[k].append(float(values.sum()))
        return out

    def _choice_scores_rows(self, ctxs: list[list[int]], conts: list[list[list[int]]]
                            ) -> list[list[float]]:
        """One left-padded row per (prompt, choice): for attention without custom masks."""
        pairs = [(i, j) for i, cs in enumerate(conts) for j in range(len(cs))]
        rows = [ctxs[i] + conts[i][j] for i, j in pairs]
        order = sorted(range(len(rows)), key=lambda k: -len(rows[k]))
        out: list[list[float]] = [[0.0] * len(cs) for cs in conts]
        for start, end in self._chunks([len(rows[k]) for k in order]):
            batch = order[start:end]
            ids, mask = self._left_pad([rows[k] for k in batch])
            keep = max(len(conts[pairs[k][0]][pairs[k][1]]) for k in batch) + 1
            logprobs = torch.log_softmax(self._forward(ids, mask, keep).float(), dim=-1)
            picks = []  # (row, position, token) of every continuation token
            for b, k in enumerate(batch):
                i, j = pairs[k]
                cont = conts[i][j]
                picks.append([(b, keep - len(cont) - 1 + t, c) for t, c in enumerate(cont)])
            for k, values in zip(batch, _gather(logprobs, picks), strict=True):
                i, j = pairs[k]
                out[i][j] = float(values.sum())
        return out


def evaluate(model: torch.nn.Module, tokenizer: Any, task: Task,
             item_ids: Sequence[str] | None = None, *, batch_size: int = 16,
             method: Method = "auto", acc: Literal["acc", "acc_norm"] = "acc") -> EvalResult:
    """Per-item correctness of ``model`` on ``task`` (optionally a subset of item ids)."""
    return Evaluator(model, tokenizer, batch_size=batch_size, acc=acc)(task, item_ids, method)


def _gather(logprobs: torch.Tensor, picks: list[list[tuple[int, int, int]]]
            ) -> list[torch.Tensor]:
    """``logprobs[row, position, token]`` for each group of picks, gathered on the device:
    only these few numbers travel to the host. Each group's values come back in order, so
    summing them on the host adds in the same order whatever the device."""
    flat = [p for group in picks for p in group]
    index = torch.tensor(flat, dtype=torch.long, device=logprobs.device).reshape(-1, 3)
    values = logprobs[index[:, 0], index[:, 1], index[:, 2]].cpu()
    return list(values.split([len(g) for g in picks]))


def _stop_criteria(tok: Any, stops: tuple[str, ...], prompt_len: int) -> Any:
    """Per-sequence stop on decoded text. transformers' own ``stop_strings`` needs a
    tokenizer with byte-level or sentencepiece pieces and fails on word-level vocabularies."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopOnText(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any
                     ) -> torch.Tensor:
            texts = tok.batch_decode(input_ids[:, prompt_len:], skip_special_tokens=True)
            done = [any(s in t for s in stops) for t in texts]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([StopOnText()])


def _verdict(tok: Any, task: Task, answer: str, ref: list[int], got: list[int],
             eos: set[int]) -> tuple[bool, str] | None:
    """(correct, text) that greedy generation would give, from teacher forcing ``ref``
    (``got``: the argmax after the prompt and after each reference token), or None when
    these predictions cannot tell.

    Greedy decoding writes ``ref`` up to the first prediction that departs from it, then
    that prediction: those tokens are known. Generation ends at an end-of-sequence token, a
    stop string or ``max_new_tokens``; if it ended within the known tokens, their text
    decides, exactly as generation's text is judged (cut at the stop, stripped, compared).
    If it did not, the text so far decides only when no continuation can turn it into the
    answer (the exact rule compares stripped text)."""
    n = next((i for i, (r, g) in enumerate(zip(ref, got, strict=False)) if r != g), len(ref))
    known = ref[:n] + got[n: n + 1]
    ended = next((i for i, t in enumerate(known) if t in eos), None)
    if ended is not None:
        known = known[:ended]
    elif len(known) >= task.max_new_tokens:
        known, ended = known[: task.max_new_tokens], task.max_new_tokens
    text = tok.decode(known, skip_special_tokens=True)
    if ended is not None or any(s in text for s in task.stop):
        text = _cut_at_stop(text, task.stop)  # judged as _generate judges its text
        return matches(get_rule("exact")(text, None), answer, "exact"), text
    if text.endswith("\ufffd"):  # a character split over tokens: wait for the rest
        return None
    target, written = answer.strip(), text.lstrip()
    if not written or target.startswith(written):
        return None  # may still become the answer
    if written.startswith(target) and not written[len(target):].strip():
        return None  # the answer and whitespace so far: depends on what follows
    return False, text


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    cut = len(text)
    for s in stops:
        i = text.find(s)
        if i >= 0:
            cut = min(cut, i)
    return text[:cut]


def _word_level(tok: Any) -> bool:
    """Word-level tokenizers split on whitespace: no leading-space delimiter in continuations."""
    backend = getattr(tok, "backend_tokenizer", None)
    return backend is not None and type(backend.model).__name__ == "WordLevel"


def detect_language(text: str) -> str:
    """ISO 639-1 code of ``text`` with an offline detector (py3langid's bundled model)."""
    try:
        import py3langid
    except ImportError:  # pragma: no cover
        raise ConfigError("the answer-language check needs `pip install py3langid` "
                          "(extra [lang])") from None
    return str(py3langid.classify(text)[0])
