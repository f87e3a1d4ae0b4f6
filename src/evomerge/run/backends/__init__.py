"""Evaluation backends: where the search's merge-and-evaluate jobs run. Each backend is one
module here, registered in ``BACKENDS`` under its config ``name``."""

from evomerge.run.backends.base import BACKENDS, Backend, Job, OnDone, make_backend

__all__ = ["BACKENDS", "Backend", "Job", "OnDone", "make_backend"]
