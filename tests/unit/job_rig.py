"""A job runner on a fake ComfyUI, for tests of a job's start and life (tests/unit/
test_job_start.py, test_job_lifecycle.py, test_fleet_lifecycle.py).

The runner is the gateway's own (app.jobs.runner, app.jobs.start) with its real input files,
model cache (holding one checkpoint), scheduler, history and trackers; ComfyUI is a small
FastAPI app on a loopback server (uvicorn, in this process) that queues prompts, stores uploads
in a temporary input folder and counts cancels; there is one instance, or a pool of several.
Nothing reads a
websocket: the test says how a prompt ends (`finish`, `fail`), or that an instance died
(`crash`), by handing its tracker what ComfyUI (or the pool) would. Every outcome a job reaches
passes the runner's metrics hook, which counts them (`Outcomes`): exactly one per job.
"""

from __future__ import annotations

import asyncio
import base64
import io
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import uvicorn
from fastapi import FastAPI, Form, Request, UploadFile
from PIL import Image

from app.comfy.client import ComfyClient
from app.comfy.tracker import PromptTracker
from app.core.addresses import AddressPolicy
from app.core.errors import ComfyUnavailable
from app.core.metrics import MetricsHooks
from app.core.settings import load_settings
from app.jobs.finish import Finisher
from app.jobs.history import JobHistory
from app.jobs.inputs import InputFiles
from app.jobs.job import Job
from app.jobs.records import JobRecord
from app.jobs.runner import JobRunner
from app.jobs.scheduler import Scheduler
from app.jobs.spool import Spool
from app.jobs.uploads import Uploader
from app.jobs.webhooks import WebhookSender
from app.models.cache import Entry
from app.models.store import ModelStore

CHECKPOINT = "held.safetensors"


def png(size: int) -> str:
    out = io.BytesIO()
    Image.new("RGB", (size, size), "red").save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


class FakeComfy:
    """What a job's start asks of ComfyUI: uploads, /prompt, cancels."""

    def __init__(self, input_dir: Path) -> None:
        self.prompts: list[str] = []
        self.extra_data: dict[str, Any] = {}  # by prompt id: what each was sent besides
        self.numbers: dict[str, float] = {}  # the `number` each prompt was queued with
        self.ended: set[str] = set()  # prompts the test finished or failed
        self.cancelled: list[str] = []
        self.app = FastAPI()

        @self.app.post("/upload/image")
        async def upload(
            image: UploadFile, subfolder: str = Form(""), type: str = Form("input")
        ) -> dict[str, str]:
            folder = input_dir / subfolder
            folder.mkdir(parents=True, exist_ok=True)
            (folder / str(image.filename)).write_bytes(await image.read())
            return {"name": str(image.filename), "subfolder": subfolder, "type": type}

        @self.app.post("/prompt")
        async def prompt(request: Request) -> dict[str, Any]:
            body = await request.json()
            self.prompts.append(body["prompt_id"])
            if "extra_data" in body:
                self.extra_data[body["prompt_id"]] = body["extra_data"]
            self.numbers[body["prompt_id"]] = body.get("number", len(self.prompts))
            return {"prompt_id": body["prompt_id"], "number": len(self.prompts), "node_errors": {}}

        @self.app.get("/queue")
        async def queue_now() -> dict[str, Any]:
            """The first unended prompt runs; the rest are listed as ComfyUI does: unsorted."""
            left = [p for p in self.prompts if p not in self.ended and p not in self.cancelled]
            items = [[self.numbers[p], p, {}, {}, []] for p in left]
            return {"queue_running": items[:1], "queue_pending": items[1:]}

        @self.app.post("/queue")
        async def queue(request: Request) -> dict[str, Any]:
            self.cancelled += (await request.json()).get("delete", [])
            return {}

        @self.app.post("/interrupt")
        async def interrupt() -> dict[str, Any]:
            return {}


@dataclass(eq=False)
class FakeInstance:
    """One ComfyUI of the pool, as the scheduler and the runner see it (no process)."""

    index: int
    client: ComfyClient
    tracker: PromptTracker
    name: str = ""
    jobs: set[str] = field(default_factory=set)
    models: frozenset[str] = frozenset()
    idle_since: float = field(default_factory=time.monotonic)
    jobs_run: int = 0
    jobs_since_start: int = 0
    accepting: bool = True
    comfy_queue: int = 0
    process: Any = field(default_factory=lambda: SimpleNamespace(running=True))


class Outcomes(MetricsHooks):
    """Every outcome a job reached, as (request id, status), in order: the runner reports each
    one here, once."""

    def __init__(self) -> None:
        self.ended: list[tuple[str, str]] = []

    def job_ended(self, record: JobRecord, started: float) -> None:
        self.ended.append((record.id, record.status))

    def of(self, request_id: str) -> list[str]:
        return [status for rid, status in self.ended if rid == request_id]


@dataclass
class Rig:
    runner: JobRunner
    comfy: FakeComfy
    instances: list[FakeInstance]
    input_dir: Path
    server: uvicorn.Server
    serving: asyncio.Task[None]
    outcomes: Outcomes = field(default_factory=Outcomes)

    def reset(self, *, retries: int = 0, timeout_s: float | None = None) -> Rig:
        """Ready for the next test, with JOB_RETRIES and PROMPT_TIMEOUT_S as given (a rig is
        shared by a module's tests: its HTTP clients take a while to make)."""
        self.assert_capacity_whole()
        runner = self.runner
        runner.retries = retries if runner.scheduler.pooled else 0  # as JobRunner sets it
        runner.timeout_s = runner.finisher.timeout_s = timeout_s
        self.comfy.prompts.clear()
        self.comfy.extra_data.clear()
        self.comfy.numbers.clear()
        self.comfy.ended.clear()
        self.comfy.cancelled.clear()
        self.outcomes.ended.clear()
        for instance in self.instances:
            instance.models = frozenset()  # as if freshly started: no model loaded
        return self

    def finish(self, job: Job) -> None:
        """ComfyUI is done with the job's prompt (its last `executing` event)."""
        assert job.instance is not None and job.waiter is not None, "the job is not placed"
        self.comfy.ended.add(job.waiter.prompt_id)
        job.instance.tracker.handle("executing", {"prompt_id": job.waiter.prompt_id, "node": None})

    def fail(self, job: Job) -> None:
        """ComfyUI's execution_error for the job's prompt."""
        assert job.instance is not None and job.waiter is not None, "the job is not placed"
        error = {"prompt_id": job.waiter.prompt_id, "node_id": "4", "node_type": "SaveImage",
                 "exception_message": "out of paint", "exception_type": "RuntimeError"}  # fmt: skip
        job.instance.tracker.handle("execution_error", error)

    def crash(self, instance: FakeInstance) -> None:
        """The instance's process exited: what the pool tells its tracker (app.gateway.pool)."""
        lost = ComfyUnavailable(f"{instance.name} exited (code 1)", instance_lost=True)
        instance.tracker.fail_all(lost)

    def assert_capacity_whole(self) -> None:
        runner = self.runner
        assert runner.active == {}
        assert runner.preparing == set()
        assert runner.by_prompt == {}
        assert runner.tasks == set()
        assert runner.scheduler.waiting == []
        for instance in self.instances:
            assert instance.jobs == set()
            assert instance.tracker.waiters == {}
        assert +runner.models.cache.holds == {}  # no model held
        assert [p.name for p in self.input_dir.iterdir()] == []  # no input folder left
        assert runner.jobs_of("alice") == 0


def graph(**inputs: Any) -> dict[str, Any]:
    """A graph that takes something at every step: a held model, two input files."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "2": {"class_type": "LoadImage", "inputs": {"image": png(1)}},
        "3": {"class_type": "LoadImageMask", "inputs": {"image": png(2), "channel": "A"}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], **inputs}},
    }


async def make_rig(
    instance_count: int,
    tmp_path: Path,
    *,
    retries: int = 0,
    timeout_s: float | None = None,
    one_at_a_time: bool = False,
) -> Rig:
    """A runner of `instance_count` instances, its folders under tmp_path; JOB_RETRIES and
    PROMPT_TIMEOUT_S as given; `one_at_a_time` as in a fleet (one job per instance)."""
    settings = load_settings(
        input_dir=tmp_path / "input",
        output_dir=tmp_path / "output",
        model_cache_dir=tmp_path / "models",
    )
    input_dir = settings.comfy_input_dir
    assert input_dir == tmp_path / "input"  # never ComfyUI's own folder
    input_dir.mkdir(parents=True)
    comfy = FakeComfy(input_dir)
    server, serving, url = await serve(comfy.app)
    instances = []
    for index in range(instance_count):
        client = ComfyClient(url)
        tracker = PromptTracker(client, client_id=f"gw-{index}", silence_s=60)
        instances.append(FakeInstance(index, client, tracker, name=f"comfyui-{index}"))
    addresses = AddressPolicy.from_settings(settings)
    uploader = Uploader(addresses, timeout_s=10)
    models = ModelStore(settings, instances[0].client, addresses)
    path = models.cache.path("checkpoints", CHECKPOINT)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")
    now = time.time()
    models.cache.add(Entry("checkpoints", CHECKPOINT, 7, "0" * 64, "http://x/", "k", now, now))
    runner = JobRunner(
        Scheduler(instances, one_at_a_time=one_at_a_time),  # type: ignore[arg-type]
        InputFiles(settings, instances[0].client),
        Finisher(
            settings.comfy_output_dir,
            uploader,
            Spool(settings.comfy_output_dir.parent),
            keep_outputs=False,
            timeout_s=timeout_s,
        ),
        JobHistory(max_finished=100, ttl_s=600),
        WebhookSender(settings),
        uploader,
        addresses,
        models,
        timeout_s=timeout_s,
        retries=retries,
    )
    rig = Rig(runner, comfy, instances, input_dir, server, serving)
    runner.metrics = rig.outcomes
    return rig


async def close_rig(rig: Rig) -> None:
    runner = rig.runner
    for instance in rig.instances:
        await instance.client.aclose()
    await runner.sender.aclose()
    await runner.uploader.aclose()
    await runner.models.aclose()
    rig.server.should_exit = True
    await rig.serving


async def serve(app: FastAPI) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    """The app on a loopback port of its own: the server, its task and its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not serving.done(), "the fake ComfyUI's server did not start"
        await asyncio.sleep(0.005)
    return server, serving, f"http://127.0.0.1:{sock.getsockname()[1]}"
