"""Generated multilingual number benchmarks for the demo zoo (no downloads).

Numbers are written as words in English, Italian and German with ``num2words``; answers are
digits. Every task is a set of question templates over operand pairs; the operand pairs of a
task are split once into train / search / test, so no item is shared between splits.

Skills, by design:
- the *base* sees a number dictionary in every language (``sette = 7``, ``più = +``),
  symbolic arithmetic and comparison with operands in mixed languages
  (``sette + three = 10``), and English questions about single numbers;
- a *math expert* learns English addition questions;
- a *language expert* learns questions in its language that are not arithmetic;
- the *cross-lingual target* (addition asked in Italian) needs both;
- the *multi-task pair* is English addition vs English comparison.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from functools import cache
from typing import Any

from evomerge.errors import ConfigError
from evomerge.eval.tasks import Item, Task

LANGS = ("en", "it", "de")
MAX_OPERAND = 30
SPLITS = ("train", "search", "test")
SPLIT_SHARES = (0.5, 0.25, 0.25)

OPERATOR = {"en": "plus", "it": "più", "de": "plus"}
LARGER = {"en": "larger", "it": "maggiore", "de": "größer"}

# question templates: {a}, {b} are number words in the template's language
TEMPLATES: dict[str, str] = {
    "add_en": "what is {a} plus {b} ?",
    "add_it": "quanto fa {a} più {b} ?",
    "add_de": "was ist {a} plus {b} ?",
    "max_en": "which is larger , {a} or {b} ?",
    "max_it": "qual è il maggiore tra {a} e {b} ?",
    "max_de": "welche ist größer , {a} oder {b} ?",
    "num_en": "what is {a} ?",
    "num_it": "quanto fa {a} ?",
    "num_de": "was ist {a} ?",
}


@cache
def word(n: int, lang: str) -> str:
    from num2words import num2words

    return str(num2words(n, lang=lang)).replace(" ", "-")


def _answer(task: str, a: int, b: int) -> int:
    kind = task.split("_")[0]
    return {"add": a + b, "max": max(a, b), "num": a}[kind]


def _pairs(task: str) -> list[tuple[int, int]]:
    if task.startswith("num"):
        return [(a, 0) for a in range(MAX_OPERAND + 1)]
    return [(a, b) for a in range(MAX_OPERAND + 1) for b in range(MAX_OPERAND + 1)]


def split_pairs(task: str, seed: int = 0) -> dict[str, list[tuple[int, int]]]:
    """Disjoint operand pairs per split, the same for every language of a skill."""
    skill = task.split("_")[0]
    pairs = _pairs(task)
    rng = random.Random(f"{seed}:{skill}")
    rng.shuffle(pairs)
    n = len(pairs)
    cut1 = int(SPLIT_SHARES[0] * n)
    cut2 = cut1 + int(SPLIT_SHARES[1] * n)
    return {"train": pairs[:cut1], "search": pairs[cut1:cut2], "test": pairs[cut2:]}


def task_items(task: str, split: str, seed: int = 0) -> list[Item]:
    """Items of one task (e.g. ``add_it``) and split, in a stable order."""
    if task not in TEMPLATES:
        raise ConfigError(f"unknown zoo task {task!r} (known: {', '.join(TEMPLATES)})")
    lang = task.split("_")[1]
    template = TEMPLATES[task]
    items = []
    for a, b in split_pairs(task, seed)[split]:
        prompt = template.format(a=word(a, lang), b=word(b, lang))
        items.append(Item(id=f"{task}-{a}-{b}", prompt=prompt, answer=str(_answer(task, a, b)),
                          meta={"task": task, "lang": lang, "split": split}))
    return items


def zoo_task(task: str, split: str = "test", seed: int = 0,
             options: dict[str, Any] | None = None, fewshot_from: str | None = None) -> Task:
    """A zoo task as an evaluation ``Task`` (exact match on the digits answer); ``options``
    are task options (few-shot, chat, generation), few-shot examples come from
    ``fewshot_from`` or else the zoo's training split."""
    from evomerge.eval.tasks import load_task, task_options

    options = task_options(options or {}, f"zoo task {task}")
    if options.get("fewshot"):
        options["fewshot_pool"] = (load_task(fewshot_from).items if fewshot_from
                                   else tuple(task_items(task, "train", seed)))
    return Task(name=f"{task}/{split}", items=tuple(task_items(task, split, seed)),
                **{"max_new_tokens": 3, "stop": (), **options})


def base_corpus(rng: random.Random, dict_langs: tuple[str, ...] = LANGS,
                operand_langs: tuple[str, ...] = LANGS,
                qa_tasks: tuple[str, ...] = ("num_en",)) -> Iterator[tuple[str, str]]:
    """Endless (prompt, answer) pairs of the base model's pretraining mixture: a dictionary
    of number and operator words (``dict_langs``), symbolic addition and comparison with
    operands in ``operand_langs`` or digits, and question tasks ``qa_tasks``."""
    numbers = range(MAX_OPERAND + 1)
    while True:
        r = rng.random()
        if r < 0.2 or (r >= 0.85 and not qa_tasks):
            lang = rng.choice(dict_langs)
            if rng.random() < 0.9:
                n = rng.choice(numbers)
                yield f"{word(n, lang)} =", str(n)
            else:
                yield f"{OPERATOR[lang]} =", "+"
        elif r < 0.6:
            a, b = rng.choice(numbers), rng.choice(numbers)
            yield f"{_operand(a, rng, operand_langs)} + {_operand(b, rng, operand_langs)} =", \
                str(a + b)
        elif r < 0.85:
            a, b = rng.choice(numbers), rng.choice(numbers)
            yield (f"max ( {_operand(a, rng, operand_langs)} , "
                   f"{_operand(b, rng, operand_langs)} ) ="), str(max(a, b))
        else:
            task = rng.choice(qa_tasks)
            lang = task.split("_")[1]
            a, b = rng.choice(numbers), rng.choice(numbers)
            yield TEMPLATES[task].format(a=word(a, lang), b=word(b, lang)), str(_answer(task, a, b))


def expert_corpus(rng: random.Random, items: list[Item], dictionary: str | None = None,
                  symbolic: str | None = None) -> Iterator[tuple[str, str]]:
    """An expert's fine-tuning mixture: question items, and for a language expert the
    language's number dictionary (with its operator word) and symbolic number work
    (addition and comparison) with operands written in that language."""
    numbers = range(MAX_OPERAND + 1)
    pool = list(items)
    while True:
        r = rng.random()
        if symbolic and 0.3 <= r < 0.75:
            a, b = rng.choice(numbers), rng.choice(numbers)

            def op(n: int) -> str:
                return word(n, symbolic) if rng.random() < 0.7 else str(n)

            if rng.random() < 0.5:
                yield f"{op(a)} + {op(b)} =", str(a + b)
            else:
                yield f"max ( {op(a)} , {op(b)} ) =", str(max(a, b))
        elif dictionary and (r < 0.3 or not pool):
            if rng.random() < 0.15:
                yield f"{OPERATOR[dictionary]} =", "+"
            else:
                n = rng.choice(numbers)
                yield f"{word(n, dictionary)} =", str(n)
        else:
            it = rng.choice(pool)
            yield it.prompt, it.answer


def _operand(n: int, rng: random.Random, langs: tuple[str, ...] = LANGS) -> str:
    choice = rng.randrange(len(langs) + 1)
    return str(n) if choice == len(langs) else word(n, langs[choice])


def vocabulary() -> list[str]:
    """Every word the zoo's prompts and answers use (for the word-level tokenizer)."""
    words: set[str] = set()
    for lang in LANGS:
        words.update(word(n, lang) for n in range(MAX_OPERAND + 1))
        words.add(OPERATOR[lang])
    for template in TEMPLATES.values():
        words.update(t for t in template.split() if "{" not in t)
    words.update(str(n) for n in range(2 * MAX_OPERAND + 1))
    words.update(["=", "+", "max", "(", ")", ","])
    return sorted(words)
