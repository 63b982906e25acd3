"""A fleet worker on a real redis-server, with a job runner the test drives step by step.

FakeRunner stands in for app.jobs.runner.JobRunner where the worker touches it: `start` places the
job on a free instance of a real Scheduler (so a slot held shows), `end` settles it when the test
says, and its task then runs the worker's outcome hook and delivers the webhooks with the real
sender, as the runner does. A Node made with a rig (tests.unit.job_rig) runs the gateway's own
runner on a fake ComfyUI instead, its jobs ended by the rig (`rig.finish`, `rig.crash`).
Nothing here sleeps to make an interleaving happen: the test calls the worker's steps in the
order it wants.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from app.core.errors import GatewayError, Interrupted
from app.core.options import JobOptions
from app.core.outcome import JobOutcome
from app.core.settings import load_settings
from app.fleet.results import from_redis
from app.fleet.shelf import FileShelf
from app.fleet.store import FleetStore, fleet_key
from app.fleet.stream import Pulled
from app.fleet.worker import FleetWorker
from app.jobs.inputs import JobInputs
from app.jobs.job import Job
from app.jobs.records import JobEvent, JobKey, JobRecord
from app.jobs.scheduler import Scheduler
from app.jobs.webhooks import WebhookSender, deliver_job_end
from tests.integration.receiver import Receiver
from tests.unit.job_rig import Rig

# A job's result as Redis holds it (app.fleet.results): its file's metadata, here an uploaded one.
RESULT = {
    "filenames": ["out.png"],
    "files": [{"name": "out.png", "size": 2, "node": "9", "location": "s3://bucket/out.png"}],
}


class FakeInstance:
    """What the scheduler needs of a ComfyUI instance."""

    accepting = True
    comfy_queue = 0

    def __init__(self, index: int) -> None:
        self.index = index
        self.jobs: set[str] = set()
        self.models: frozenset[str] = frozenset()
        self.idle_since = 0.0


class FakeRunner:
    """Starts jobs on a real scheduler's instances; each ends when the test calls end()."""

    def __init__(self, scheduler: Scheduler[Any], sender: WebhookSender) -> None:
        self.scheduler = scheduler
        self.sender = sender
        self.outcome: Any = None  # the worker's hook
        self.started: list[str] = []  # request ids, in the order they started
        self.fail: BaseException | None = None  # the next start raises it, having given all back
        self.fail_interrupt: BaseException | None = None
        self.ends: dict[JobKey, tuple[asyncio.Task[Any], asyncio.Future[Any]]] = {}
        self.ending: set[asyncio.Task[Any]] = set()  # the tasks of jobs told to end

    async def start(
        self,
        request_id: str,
        graph: dict[str, Any],
        options: JobOptions,
        *,
        owner: str | None = None,
        echo_input: dict[str, Any] | None = None,
        workflow: str = "prompt",
        listener: Callable[[JobEvent, JobRecord], None] | None = None,
    ) -> Job:
        record = JobRecord(request_id, "", workflow, owner=owner)
        job = Job(record, graph, options, echo_input, JobInputs("gw-test"), frozenset())
        instance = self.scheduler.try_place(job.slot, job.models)
        assert instance is not None, "the worker pulled a job with no instance free"
        if self.fail is not None:
            self.scheduler.release(instance, job.slot)  # as the runner gives back what it took
            error, self.fail = self.fail, None
            raise error
        if listener is not None:
            record.listeners.append(listener)
        self.started.append(request_id)
        ended: asyncio.Future[dict[str, Any] | GatewayError] = asyncio.Future()
        record.emit("queued", {"id": request_id})
        record.status = "running"
        record.emit("running", {"id": request_id})
        job.task = asyncio.create_task(self._run(job, instance, ended))
        self.ends[job.key] = (job.task, ended)
        return job

    async def _run(self, job: Job, instance: Any, ended: asyncio.Future[Any]) -> Any:
        try:
            outcome = await ended
        finally:
            self.scheduler.release(instance, job.slot)
        if isinstance(outcome, GatewayError):
            ending = JobOutcome.failed(job.id, job.graph, outcome)
        else:
            ending = from_redis({"id": job.id, **outcome}, FileShelf())
        job.record.end(ending)
        decided = await self.outcome(job, ending)
        if decided is None:
            return None
        if job.options.webhook:
            await deliver_job_end(
                self.sender, webhook=str(job.options.webhook), webhook_v2=None,
                graph=job.graph, outcome=decided,
            )  # fmt: skip
        return decided if decided.error is None else None

    def end(self, request_id: str, outcome: Any, owner: str | None = None) -> None:
        """End the job: a result, or a GatewayError."""
        task, ended = self.ends.pop((owner, request_id))
        ended.set_result(outcome)
        self.ending.add(task)
        task.add_done_callback(self.ending.discard)

    async def interrupt(self, key: JobKey) -> None:
        if self.fail_interrupt is not None:
            error, self.fail_interrupt = self.fail_interrupt, None
            raise error
        self.end(key[1], Interrupted("the job was interrupted on request"), key[0])


class Node:
    """One gateway of a test fleet: its worker, fake runner, scheduler and store."""

    def __init__(
        self, url: str, name: str, receiver: Receiver, instances: int = 1, rig: Rig | None = None
    ) -> None:
        settings = load_settings(
            queue_url=url, queue_name=name, allow_private_urls=True, prompt_webhook_retries=1,
            job_visibility_timeout_s=3, job_max_attempts=3,
        )  # fmt: skip
        self.store = FleetStore(url, name, ttl_s=60, timeout_s=2)
        self.rig = rig
        self.sender = WebhookSender(settings) if rig is None else rig.runner.sender
        self.runner: Any
        if rig is None:
            self.scheduler: Scheduler[Any] = Scheduler(
                [FakeInstance(i) for i in range(instances)], one_at_a_time=True
            )
            self.runner = FakeRunner(self.scheduler, self.sender)
        else:  # the gateway's own runner (its scheduler made one_at_a_time, as a fleet's is)
            self.scheduler, self.runner = rig.runner.scheduler, rig.runner
        self.worker = FleetWorker(self.store, self.runner, self.scheduler, self.sender, settings)
        self.receiver = receiver

    async def take(self, *, reclaim: bool = False) -> Pulled:
        """Pull the next message (or take over an idle one) and run the worker's start of it."""
        consumer = self.worker.consumer
        if reclaim:
            pulled = await self.store.reclaim(consumer, idle_ms=0)
        else:
            pulled = await self.store.pull(consumer, self.worker.max_attempts)
        assert pulled is not None, "no message came"
        await self.start(pulled)
        return pulled

    async def start(self, pulled: Pulled) -> None:
        """What the worker's pull loop does with a message: start it aside, then let it settle."""
        self.worker.starting[pulled.message_id] = pulled
        await self.worker._start(pulled)
        await self.settle()

    async def settle(self) -> None:
        """Until every start, the tasks of the jobs the test ended, and the acknowledgements
        after them are done (jobs the test has not ended go on)."""
        # A rig's jobs end when the rig says, and the test awaits them itself.
        ending = self.runner.ending if self.rig is None else set()
        while busy := [*self.worker._finishing, *ending]:
            await asyncio.gather(*busy, return_exceptions=True)
            await asyncio.sleep(0)  # a job's done-callback starts its acknowledgement

    def idle(self) -> bool:
        """Nothing taken: no job starting or running here, every instance free."""
        free = all(self.scheduler.free(i) for i in self.scheduler.instances)
        return free and not self.worker.starting and not self.worker.running

    async def close(self) -> None:
        await self.worker.close()
        if self.rig is None:  # a rig's sender is the rig's to close
            await self.sender.aclose()
        await self.store.aclose()


@asynccontextmanager
async def nodes(
    url: str, receiver: Receiver, count: int, rigs: list[Rig] | None = None
) -> AsyncIterator[list[Node]]:
    """`count` gateways of one fleet (a name of its own in the Redis); with rigs, each runs
    its rig's runner."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    made = [Node(url, name, receiver, rig=rigs[i] if rigs else None) for i in range(count)]
    await made[0].store.ensure_group()
    try:
        yield made
    finally:
        for node in made:
            await node.close()


def spec(
    request_id: str,
    hook: str | None = None,
    owner: str | None = None,
    graph: dict[str, Any] | None = None,
) -> dict[str, Any]:
    options = {"webhook": hook} if hook else {}
    return {"id": request_id, "owner": owner, "graph": graph or {"1": {}}, "options": options,
            "workflow": "prompt"}  # fmt: skip


async def submit(
    store: FleetStore,
    request_id: str,
    hook: str | None = None,
    graph: dict[str, Any] | None = None,
) -> str:
    """Queue a job as the accepting side does; its key."""
    key = fleet_key(None, request_id)
    queued = spec(request_id, hook, graph=graph)
    assert await store.enqueue(key, queued, {"id": request_id}, hooks=bool(hook))
    return key


async def terminal_events(store: FleetStore, key: str) -> list[str]:
    """The types of the job's terminal events in Redis (one, once it ended)."""
    events = await store.redis.xrange(store.events_key(key))
    return [f["type"] for _, f in events if f["type"] in ("complete", "failed")]


def failing_once(real: Callable[..., Awaitable[Any]], error: BaseException) -> Callable[..., Any]:
    """real, except that its first call raises error."""
    calls = 0

    async def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise error
        return await real(*args, **kwargs)

    return call
