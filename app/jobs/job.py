"""Job: one accepted job, from its request to its one outcome, across its attempts."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from app.comfy.events import PromptWaiter
from app.comfy.graph import Graph
from app.comfy.instance import ComfyInstance
from app.core.options import JobOptions
from app.core.outcome import JobOutcome
from app.jobs.inputs import JobInputs
from app.jobs.records import JobKey, JobRecord


@dataclass(eq=False)
class Job:
    record: JobRecord
    graph: Graph  # inputs rewritten; each attempt adds its own save prefixes
    options: JobOptions
    echo_input: dict[str, Any] | None
    inputs: JobInputs
    models: frozenset[str]  # the checkpoints it loads: it prefers an instance that has them
    started: float = field(default_factory=time.monotonic)
    rank: float = 0.0  # its place in the queues (app.core.priority), fixed when accepted
    task: asyncio.Task[JobOutcome] | None = None
    instance: ComfyInstance | None = None  # while placed on one
    waiter: PromptWaiter | None = None  # of the current attempt
    submitted: Graph | None = None  # the graph of the current attempt, as ComfyUI has it
    attempts: int = 0

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def key(self) -> JobKey:
        return self.record.key

    @property
    def slot(self) -> str:
        """The job's name in the scheduler and on its instance: unique across owners."""
        owner = self.record.owner
        return self.id if owner is None else f"{owner}/{self.id}"

    @property
    def prompt(self) -> Graph:
        """The graph as ComfyUI has it (its save prefixes made unique), or will have it."""
        return self.submitted or self.graph
