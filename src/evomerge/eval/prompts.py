"""What the model reads for one item: few-shot examples and the tokenizer's chat template.

Few-shot examples come from the task's pool (a separate file, or the zoo's training split),
never the evaluated item itself, and are drawn with a seed of their own per item, so an item
is asked the same way whatever subset, batch or candidate it is evaluated in (the fitness
cache and IRT rely on that). Plain prompts join the examples lm-eval's way
("Q A" + "\\n\\n" + ... + "Q"); chat prompts put them in user/assistant turns (lm-eval's
``fewshot_as_multiturn``) after an optional system message.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from evomerge.errors import ConfigError

if TYPE_CHECKING:
    from evomerge.eval.tasks import Item, Task


def shots(task: Task, item: Item) -> list[Item]:
    """The few-shot examples shown before ``item`` (none when ``task.fewshot`` is 0)."""
    if not task.fewshot:
        return []
    pool = [p for p in task.fewshot_pool if p.id != item.id and p.prompt != item.prompt]
    if len(pool) < task.fewshot:
        raise ConfigError(f"task {task.name!r}: fewshot {task.fewshot} needs that many examples "
                          f"besides the item, the pool has {len(pool)}")
    return random.Random(f"{task.fewshot_seed}:{item.id}").sample(pool, task.fewshot)


def render(task: Task, item: Item, tokenizer: Any) -> tuple[str, bool]:
    """(prompt text, whether the tokenizer should add its special tokens). A chat prompt
    already holds them (the template writes BOS and role markers)."""
    examples = shots(task, item)
    if not task.chat:
        parts = [ex.prompt + task.target_delimiter + ex.answer for ex in examples]
        return task.fewshot_delimiter.join([*parts, item.prompt]), True
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"task {task.name!r}: chat: true, but the model's tokenizer has no "
                          "chat template (set chat: false, or use an instruction-tuned "
                          "model's tokenizer)")
    messages: list[dict[str, str]] = []
    if task.system:
        messages.append({"role": "system", "content": task.system})
    for ex in examples:
        messages += [{"role": "user", "content": ex.prompt},
                     {"role": "assistant", "content": ex.answer}]
    messages.append({"role": "user", "content": item.prompt})
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True)
    except Exception as exc:  # jinja raises its own errors (e.g. no system role)
        raise ConfigError(f"task {task.name!r}: the chat template failed: {exc}") from None
    return str(text), False


def continuation(task: Task, prompt: str, answer: str) -> str:
    """The text a right answer continues ``prompt`` with: the answer after the task's
    delimiter, with one whitespace between them whichever side carries it. Answers are
    commonly written with their leading space (" hiss", the prompt/completion format);
    adding the delimiter to those would ask for two spaces, a text no model writes. In a
    chat prompt the answer starts the assistant's turn: no delimiter there."""
    if task.chat or prompt[-1:].isspace() or answer[:1].isspace():
        return answer
    return task.target_delimiter + answer
