"""Evaluation: tasks, per-item evaluator, answer extraction, lm-eval adapter."""

from evomerge.eval.evaluator import EvalResult, Evaluator, evaluate
from evomerge.eval.tasks import Item, Task, load_task

__all__ = ["EvalResult", "Evaluator", "Item", "Task", "evaluate", "load_task"]
