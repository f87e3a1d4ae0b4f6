"""Jobs one after another in the search process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from evomerge.run.backends.base import BACKENDS, Backend, BackendOptions, Job, OnDone
from evomerge.run.worker import EvalWorker

if TYPE_CHECKING:
    from evomerge.config import EvolveConfig


class LocalOptions(BackendOptions):
    name: Literal["local"] = "local"


@BACKENDS.register("local")
class LocalBackend(Backend):
    Options = LocalOptions

    def __init__(self, config: EvolveConfig) -> None:
        self.worker = EvalWorker(config)

    def run(self, jobs: list[Job], on_done: OnDone) -> None:
        for i, job in enumerate(jobs):
            on_done(i, {**self.worker.run(*job), "worker": 0})
