"""Ray: one long-lived actor per worker slot (each an ``EvalWorker`` that read the models
once, from the shared path, when it started); jobs are dispatched as actors become free and
results handed back as they complete. A job whose actor dies is put back at the head of the
queue for the next free actor (Ray restarts the dead one), so every job finishes exactly
once.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any, Literal

from pydantic import Field

from evomerge.config import EvolveConfig
from evomerge.errors import ConfigError, ModelError
from evomerge.run.backends.base import BACKENDS, Backend, BackendOptions, Job, OnDone
from evomerge.run.worker import EvalWorker


class RayOptions(BackendOptions):
    name: Literal["ray"] = "ray"
    # an existing Ray cluster ("auto", "ray://host:10001"); None: start a local one
    address: str | None = None
    workers: int = Field(default=2, ge=1)  # evaluation actors, each with its own model
    cpus_per_worker: float = Field(default=1.0, gt=0)  # CPUs (and torch threads) per actor
    gpus_per_worker: float = Field(default=0.0, ge=0)  # GPUs per actor (fractions share one)


class _Actor:
    """The Ray actor: an EvalWorker plus its process id (for fault tests and progress)."""

    def __init__(self, config_json: dict[str, Any], threads: int) -> None:
        self.worker = EvalWorker(EvolveConfig.model_validate(config_json), threads=threads)

    def run(self, job: Job) -> dict[str, Any]:
        return self.worker.run(*job)

    def pid(self) -> int:
        return os.getpid()


@BACKENDS.register("ray")
class RayBackend(Backend):
    Options = RayOptions

    def __init__(self, config: EvolveConfig) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("backend ray needs Ray: pip install 'evomerge[ray]'") from None
        b = config.backend
        self.ray = ray
        self.started = not ray.is_initialized()  # a cluster of our own: shut down at close
        if self.started:
            if b.address is None:
                ray.init(num_cpus=max(1, int(b.workers * b.cpus_per_worker)),
                         include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            else:
                ray.init(address=b.address, log_to_driver=False, configure_logging=False)
        actor = ray.remote(num_cpus=b.cpus_per_worker, num_gpus=b.gpus_per_worker,
                           max_restarts=-1, max_task_retries=0)(_Actor)
        cfg = config.model_dump(mode="json")
        threads = max(1, int(b.cpus_per_worker))
        self.actors = [actor.remote(cfg, threads) for _ in range(b.workers)]
        try:  # every worker has read the models before the search starts
            self.actor_pids = self.pids()  # (as started; Ray gives a restarted one a new pid)
        except Exception as exc:  # a worker's own error (bad model, no CUDA) or a dead node
            for a in self.actors:
                ray.kill(a)
            if self.started:
                ray.shutdown()
            raise ModelError(f"a Ray worker failed to start: {str(exc).splitlines()[-1]}"
                             ) from None
        self.busy: dict[int, str] = {}
        self.done = [0] * b.workers
        self.retried = 0

    def pids(self) -> list[int]:
        return self.ray.get([a.pid.remote() for a in self.actors])

    def run(self, jobs: list[Job], on_done: OnDone) -> None:
        from ray.exceptions import RayActorError

        queue = deque(range(len(jobs)))
        # two calls in flight per actor: the next job is already queued at the actor while
        # the driver handles the previous result, so workers never wait for the round trip
        idle = deque([a for _ in range(2) for a in range(len(self.actors))])
        pending: dict[Any, tuple[int, int]] = {}  # ref -> (job, actor)
        while queue or pending:
            while queue and idle:
                j, a = queue.popleft(), idle.popleft()
                pending[self.actors[a].run.remote(jobs[j])] = (j, a)
                self.busy[a] = "busy"
            ready, _ = self.ray.wait(list(pending), num_returns=1)
            for ref in ready:
                j, a = pending.pop(ref)
                if all(b != a for _, b in pending.values()):
                    self.busy.pop(a, None)
                idle.append(a)  # a dead actor is restarted by Ray and takes jobs again
                try:
                    result = self.ray.get(ref)
                except RayActorError:
                    queue.appendleft(j)  # retried on the next free actor
                    self.retried += 1
                    continue
                self.done[a] += 1
                on_done(j, {**result, "worker": a})

    def activity(self) -> str:
        line = " ".join(f"w{a}:{self.busy.get(a, 'idle')}({self.done[a]} done)"
                        for a in range(len(self.actors)))
        return line + (f" | {self.retried} retried" if self.retried else "")

    @property
    def slots(self) -> int:
        return len(self.actors)

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
        if self.started:
            self.ray.shutdown()
