"""Optimizers behind one ask/tell contract (optim/base.py); each registered in
``OPTIMIZERS`` under its config ``name``."""

from evomerge.optim.base import OPTIMIZERS, Optimizer, SearchContext, Termination, Trial

__all__ = ["OPTIMIZERS", "Optimizer", "SearchContext", "Termination", "Trial"]
