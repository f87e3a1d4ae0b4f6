"""Merging models whose vocabularies differ: one output tokenizer, embedding and output rows
aligned by token string.

Triggered, as in mergekit, by ``tokenizer_source`` (``base``, ``union`` or a model directory)
or a ``tokenizer:`` block (``source``, ``tokens``, ``pad_to_multiple_of``). The output
vocabulary is the base's, the union of all inputs' (the base's tokens first, then each model's
new tokens in recipe order, then added tokens with their settings), or a given model's. Each
input is then seen through an ``AlignedSource``: its vocabulary-indexed tensors (token
embeddings and the output head) are re-indexed to the output vocabulary, so the merge methods
see same-shaped tensors whose row ``i`` is token ``i`` in every model.

A token a model lacks gets mergekit's fill, so results equal mergekit's:

- a token only one model has: that model's row, in every model (a task-vector method then
  keeps it exactly: base and fine-tune agree on it);
- a token the base has: the base's row;
- otherwise the mean of the rows of the models that have it; zero when none has it;
- ``tokenizer.tokens.<tok>.source``: a model's row (``force: true`` also overrides models
  that have the token), another token's row of a model (``kind: model_token``), or zero
  (``kind: zero``);
- rows added by ``pad_to_multiple_of``: the mean of the real rows.

Where mergekit breaks (its issues #47, #139, #342, #425, #469: added tokens lost, wrong rows
after truncation, unusable tokenizers), evomerge checks what it writes: the output
tokenizer is saved with transformers, reloaded, and must encode every token of the merged
vocabulary to the id the rows were aligned to (``Vocabulary.check``).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from evomerge.errors import ConfigError, ModelError
from evomerge.io.checkpoint import TensorSource
from evomerge.io.naming import classify
from evomerge.recipe import MergeRecipe


def tokenizer_dir(source: TensorSource) -> Path:
    """Where a source's tokenizer lives (an adapter that adds tokens ships its own)."""
    return Path(getattr(source, "tokenizer_path", None) or source.path)  # type: ignore[attr-defined]


def _load(path: Path, model: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    except Exception as exc:  # transformers raises many types for unusable directories
        raise ModelError(f"model {model!r}: cannot load its tokenizer from {path} for "
                         f"vocabulary merging: {str(exc).splitlines()[0][:200]}") from None


def vocab_rows(source: TensorSource) -> int | None:
    """How many token rows the model's embedding has (its ``vocab_size``)."""
    cfg = source.config or {}
    for c in (cfg, cfg.get("text_config") or {}):
        if isinstance(c.get("vocab_size"), int):
            return int(c["vocab_size"])
    emb = next((n for n in source.names() if classify(n).kind == "embedding"
                and "position" not in n and "wpe" not in n), None)
    return int(source.shape(emb)[0]) if emb else None


class Vocabulary:
    """The output tokenizer and, per model, output token id -> its own row (-1: missing)."""

    def __init__(self, tokenizer: Any, vocab: dict[str, int], size: int,
                 perms: dict[str, torch.Tensor], originals: dict[str, dict[str, int]],
                 base: str | None, tokens: dict[str, dict[str, Any]]) -> None:
        self.tokenizer, self.vocab, self.size = tokenizer, vocab, size
        self.perms, self.originals, self.base, self.tokens = perms, originals, base, tokens

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def for_recipe(cls, recipe: MergeRecipe, sources: Mapping[str, TensorSource]
                   ) -> Vocabulary | None:
        """None when the recipe asks for no vocabulary handling (mergekit: copy the base's
        tokenizer and require equal shapes)."""
        if recipe.tokenizer is not None:
            block = recipe.tokenizer.model_dump()
            return cls.build(block["source"], recipe.referenced_models(), recipe.base_model,
                             sources, block.get("tokens") or {}, block.get("pad_to_multiple_of"))
        if recipe.tokenizer_source is None:
            return None
        return cls.build(recipe.tokenizer_source, recipe.referenced_models(), recipe.base_model,
                         sources)

    @classmethod
    def build(cls, how: str, models: list[str], base: str | None,
              sources: Mapping[str, TensorSource], tokens: dict[str, Any] | None = None,
              pad: int | None = None) -> Vocabulary:
        """``how``: base, union or a model directory whose tokenizer is the output's."""
        tokens = dict(tokens or {})
        base = base or models[0]
        toks = {m: _load(tokenizer_dir(sources[m]), m) for m in models}
        rows = {m: vocab_rows(sources[m]) or len(toks[m]) for m in models}
        if how == "base":
            out = _copy(toks[base])
        elif how == "union":
            out = _union(base, models, toks, rows)
            if not getattr(out, "chat_template", None):  # the base had none: keep the one
                out.chat_template = _shared_template(toks.values())  # the inputs share most
        else:
            path = Path(str(how))
            if not path.is_dir():
                raise ConfigError(f"tokenizer source {how!r} is not base, union or a model "
                                  "directory")
            out = _load(path, str(how))
        for tok in tokens:
            if tok not in out.get_vocab():
                out.add_tokens([tok])
        vocab = out.get_vocab()
        size = len(vocab)
        if pad:
            size = -(-size // int(pad)) * int(pad)
        if max(vocab.values()) >= len(vocab):
            raise ModelError("the output tokenizer's ids are not contiguous; vocabulary "
                             "merging needs ids 0..n-1")
        perms = {}
        for m in models:
            own = toks[m].get_vocab()
            perm = torch.full((len(vocab),), -1, dtype=torch.long)
            for tok, i in vocab.items():
                j = own.get(tok)
                if j is not None and j < rows[m]:
                    perm[i] = j
            perms[m] = perm
        originals = {m: toks[m].get_vocab() for m in models}
        return cls(out, vocab, size, perms, originals, base, tokens)

    def align(self, sources: Mapping[str, TensorSource]) -> dict[str, TensorSource]:
        """Every source seen through the output vocabulary (one fill cache for all)."""
        shared: dict[str, dict[int, torch.Tensor]] = {}
        return {m: AlignedSource(s, m, self, sources, shared) for m, s in sources.items()}

    # -- filling ----------------------------------------------------------------------------
    def fill_rows(self, tensors: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
        """Output token id -> the row every model lacking it (or forced) takes, for one
        vocabulary tensor; ``tensors`` are the models' own (unaligned) tensors."""
        fills: dict[int, torch.Tensor] = {}
        models = list(tensors)
        shape = next(iter(tensors.values())).shape[1:]
        dtype = next(iter(tensors.values())).dtype
        for tok, i in self.vocab.items():
            cfg = self.tokens.get(tok) or {}
            have = [m for m in models if self.perms[m][i] >= 0]
            if len(have) == len(models) and not cfg.get("force"):
                continue
            source = cfg.get("source")
            if source is not None:
                fills[i] = self._configured(tok, i, source, tensors)
            elif len(have) == 1:
                fills[i] = tensors[have[0]][self.perms[have[0]][i]]
            elif not have:
                fills[i] = torch.zeros(shape, dtype=dtype)
            elif self.base in have and self.base in tensors:
                fills[i] = tensors[self.base][self.perms[self.base][i]]
            else:
                fills[i] = torch.stack([tensors[m][self.perms[m][i]].float()
                                        for m in have]).mean(0).to(dtype)
        return fills

    def _configured(self, tok: str, i: int, source: Any, tensors: dict[str, torch.Tensor]
                    ) -> torch.Tensor:
        like = next(iter(tensors.values()))
        if isinstance(source, dict) and source.get("kind") == "zero":
            return like.new_zeros(like.shape[1:])
        if isinstance(source, dict) and source.get("kind") == "model_token":
            model = _model(source.get("model"), tensors, tok)
            j = source.get("token_id")
            if j is None:
                j = self.originals[model].get(str(source.get("token")))
                if j is None:
                    raise ConfigError(f"tokenizer.tokens.{tok}: token {source.get('token')!r}"
                                      f" is not in model {model!r}")
            if not 0 <= int(j) < tensors[model].shape[0]:
                raise ConfigError(f"tokenizer.tokens.{tok}: token id {j} is out of range for "
                                  f"model {model!r}")
            return tensors[model][int(j)]
        model = _model(source, tensors, tok)
        j = int(self.perms[model][i])
        if j < 0:
            raise ConfigError(f"tokenizer.tokens.{tok}: model {model!r} does not have the "
                              "token")
        return tensors[model][j]

    def aligned(self, model: str, tensor: torch.Tensor, fills: dict[int, torch.Tensor]
                ) -> torch.Tensor:
        perm = self.perms[model]
        forced = {self.vocab[t] for t, c in self.tokens.items() if (c or {}).get("force")}
        out = torch.zeros((self.size, *tensor.shape[1:]), dtype=tensor.dtype)
        have = perm >= 0
        idx = torch.nonzero(have).flatten()
        out[idx] = tensor[perm[idx]]
        for i, row in fills.items():
            if not bool(have[i]) or i in forced:
                out[i] = row
        if self.size > len(self.vocab):
            out[len(self.vocab):] = out[: len(self.vocab)].float().mean(0).to(out.dtype)
        return out

    # -- output ----------------------------------------------------------------------------
    def save(self, chat_template: str | None = None) -> dict[str, bytes]:
        """The output tokenizer's files, after checking that transformers reloads them and
        encodes every token of the merged vocabulary to its aligned id."""
        from transformers import AutoTokenizer

        tok = self.tokenizer
        if chat_template:
            tok.chat_template = chat_template
        with tempfile.TemporaryDirectory() as tmp:
            tok.save_pretrained(tmp)
            reloaded = AutoTokenizer.from_pretrained(tmp, trust_remote_code=False)
            self.check(reloaded)
            return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}

    def check(self, tokenizer: Any) -> None:
        if tokenizer.get_vocab() != self.vocab:
            raise ModelError("the written tokenizer's vocabulary differs from the one the "
                             "merge aligned rows to")
        for tok, i in self.vocab.items():
            ids = tokenizer.convert_tokens_to_ids([tok])
            if ids != [i]:
                raise ModelError(f"the written tokenizer maps token {tok!r} to {ids}, the "
                                 f"merge put it at {i}")


CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\\n' }}{% endif %}")


def aligned_inputs(how: str | None, models: list[str], base: str,
                   sources: Mapping[str, TensorSource]
                   ) -> tuple[dict[str, TensorSource], Vocabulary | None]:
    """A search's inputs through its ``tokenizer_source`` (unchanged when None)."""
    if how is None:
        return dict(sources), None
    vocab = Vocabulary.build(how, models, base, sources)
    return vocab.align(sources), vocab


def load_aligned_model(path: str, source: TensorSource, vocab: Vocabulary,
                       dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A model loaded as transformers does, then resized to the merged vocabulary with its
    embedding and head rows aligned (for work on whole modules: np-merge)."""
    from evomerge.io.hf import load_causal_lm

    model = load_causal_lm(path, dtype)
    model.resize_token_embeddings(vocab.size, mean_resizing=False)
    rows = {id(model.get_input_embeddings().weight): "embedding"}
    head = model.get_output_embeddings()
    with torch.no_grad():
        for name in source.names():
            if isinstance(source, AlignedSource) and source.is_vocab(name):
                kind = classify(name).kind
                target = (model.get_input_embeddings().weight if kind == "embedding"
                          else head.weight if head is not None else None)
                if target is None or (kind == "head" and id(target) in rows):
                    continue  # a tied head follows the embedding
                target.copy_(source.get(name))
    return model


def _shared_template(tokenizers: Any) -> str | None:
    """The chat template most of ``tokenizers`` have (None when none has one): a union of a
    base and its chat fine-tunes keeps the fine-tunes' template instead of dropping it."""
    from collections import Counter

    found = []
    for tok in tokenizers:
        template = getattr(tok, "chat_template", None)
        if isinstance(template, dict):
            template = template.get("default")
        if template:
            found.append(str(template).strip())
    return Counter(found).most_common(1)[0][0] if found else None


def chat_template_text(recipe: MergeRecipe, sources: Mapping[str, TensorSource]
                       ) -> str | None:
    """mergekit's ``chat_template``: ``auto`` (the template most input models share),
    ``chatml``, or a Jinja template given literally."""
    value = recipe.chat_template
    if not value:
        return None
    if value == "auto":
        return _shared_template(_load(tokenizer_dir(sources[m]), m)
                                for m in recipe.referenced_models())
    if value == "chatml":
        return CHATML
    if "{" not in value:
        raise ConfigError(f"chat_template {value!r} is not auto, chatml or a Jinja template")
    return value


def tokenizer_files(recipe: MergeRecipe, sources: Mapping[str, TensorSource],
                    vocab: Vocabulary | None, tok_source: Path | None
                    ) -> dict[str, bytes] | None:
    """The output tokenizer's files when the merge changes the tokenizer (a merged
    vocabulary or a chat template); None: copy the base's (or tokenizer_source's) files."""
    template = chat_template_text(recipe, sources)
    if vocab is not None:
        return vocab.save(template)
    if template is None:
        return None
    first = recipe.referenced_models()[0]
    directory = tok_source or tokenizer_dir(sources[first])
    tok = _load(directory, str(directory))
    tok.chat_template = template
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def _model(ref: Any, tensors: dict[str, torch.Tensor], tok: str) -> str:
    from evomerge.io.paths import resolve_relative

    if not isinstance(ref, str):
        raise ConfigError(f"tokenizer.tokens.{tok}.source must be a model, "
                          "{kind: zero} or {kind: model_token, ...}")
    for cand in (ref, resolve_relative(ref, Path.cwd())):
        if cand in tensors:
            return cand
    raise ConfigError(f"tokenizer.tokens.{tok}: model {ref!r} is not one of the recipe's "
                      "models")


def _copy(tokenizer: Any) -> Any:
    """A fresh copy (adding tokens must not change the tokenizer of an input)."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return AutoTokenizer.from_pretrained(tmp, trust_remote_code=False)


def _union(base: str, models: list[str], toks: dict[str, Any], rows: dict[str, int]) -> Any:
    """mergekit's union: the base's tokenizer, then each model's plain tokens it lacks, then
    every added token (first settings win)."""
    out = _copy(toks[base])
    have = set(out.get_vocab())
    plain: list[str] = []
    added: dict[str, Any] = {}
    for m in [base, *[x for x in models if x != base]]:
        specials = toks[m].added_tokens_decoder
        special_names = {t.content for t in specials.values()}
        for tok, i in sorted(toks[m].get_vocab().items(), key=lambda kv: kv[1]):
            if i >= rows[m] or tok in special_names:
                continue
            if tok not in have and tok not in plain:
                plain.append(tok)
        for i, info in specials.items():
            if i < rows[m] and info.content not in added:
                added[info.content] = info
    if plain:
        out.add_tokens(plain)
    new_added = [info for tok, info in added.items() if tok not in set(out.get_vocab())]
    for info in new_added:
        if info.special:
            out.add_special_tokens({"additional_special_tokens": [info]},
                                   replace_extra_special_tokens=False)
        else:
            out.add_tokens([info])
    return out


class AlignedSource:
    """A model seen through the output vocabulary (see the module docstring)."""

    def __init__(self, source: TensorSource, model: str, vocab: Vocabulary,
                 sources: Mapping[str, TensorSource], fills: dict[str, Any]) -> None:
        self.source, self.model, self.vocab, self.sources = source, model, vocab, sources
        self._fills = fills  # tensor name -> fill rows, shared by all models of the merge
        self.name = source.name
        self.path = getattr(source, "path", None)
        self.rows = vocab_rows(source)
        cfg = json.loads(json.dumps(source.config)) if source.config is not None else None
        if cfg is not None:
            for c in (cfg, cfg.get("text_config")):
                if isinstance(c, dict) and "vocab_size" in c:
                    c["vocab_size"] = vocab.size
        self.config = cfg

    def is_vocab(self, name: str) -> bool:
        info = classify(name)
        return (info.layer is None and info.kind in ("embedding", "head")
                and "position" not in name and "wpe" not in name
                and self.rows is not None and self.source.shape(name)[0] == self.rows)

    def names(self) -> list[str]:
        return self.source.names()

    def __contains__(self, name: str) -> bool:
        return name in self.source

    def shape(self, name: str) -> tuple[int, ...]:
        shape = tuple(self.source.shape(name))
        return (self.vocab.size, *shape[1:]) if self.is_vocab(name) else shape

    def dtype(self, name: str) -> torch.dtype:
        return self.source.dtype(name)

    def get(self, name: str) -> torch.Tensor:
        tensor = self.source.get(name)
        if not self.is_vocab(name):
            return tensor
        if name not in self._fills:
            own = {m: s.get(name) for m, s in self.sources.items() if name in s}
            self._fills[name] = self.vocab.fill_rows(own)
        return self.vocab.aligned(self.model, tensor, self._fills[name])
