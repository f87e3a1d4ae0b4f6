"""Optimizers behind one ask/tell interface."""

from evomerge.optim.ask_tell import OPTIMIZERS, AskTell, make_optimizer

__all__ = ["OPTIMIZERS", "AskTell", "make_optimizer"]
