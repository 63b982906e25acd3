"""Answering a job over HTTP, for every route that takes one (/prompt, workflows, facades).

A job is answered with its outputs (200, streamed), with 202 when a webhook or an asynchronous
upload will carry them, or with its event stream when the client accepts `text/event-stream`.
A request that asks for the result cache may be answered from it instead, without a job.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from app.comfy.graph import Graph
from app.core.keys import Caller
from app.core.options import JobOptions
from app.core.outcome import JobOutcome
from app.core.schemas import Accepted, ErrorResponse, Stats
from app.core.streamed_json import StreamedJson, prompt_answer
from app.gateway import Gateway
from app.jobs.cacheable import external_reason, random_reason
from app.jobs.canonical import digest
from app.jobs.records import JobView
from app.jobs.result_cache import CachedResult, ResultCache

log = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {
    202: {
        "model": Accepted,
        "description": "With `webhook`/`webhook_v2`: accepted, delivered later",
    },
    400: {"model": ErrorResponse, "description": "Invalid body, or ComfyUI refused the graph"},
    409: {"model": ErrorResponse, "description": "Interrupted, or the id is already running"},
    413: {"model": ErrorResponse, "description": "Body over MAX_BODY_SIZE_MB"},
    429: {"model": ErrorResponse, "description": "Queue full (MAX_QUEUE_DEPTH); see Retry-After"},
    502: {"model": ErrorResponse, "description": "A node failed while executing"},
    503: {"model": ErrorResponse, "description": "ComfyUI is down or restarting; see Retry-After"},
    504: {"model": ErrorResponse, "description": "The job ran past PROMPT_TIMEOUT_S"},
}

SSE_HEARTBEAT_S = 15.0


async def run_job(
    request: Request,
    gateway: Gateway,
    caller: Caller,
    options: JobOptions,
    graph: Graph,
    echo_input: dict[str, Any] | None = None,
    workflow: str = "prompt",
    *,
    cache: CacheAsk | None = None,
) -> Response:
    """Run one job for any route that takes one (/prompt, the workflow endpoints).

    `workflow` names what built the graph (`prompt`, `sd15/txt2img`) in logs and metrics.

    Answers with the outputs (200), with 202 when a webhook will carry them, or with the
    job's event stream when the client accepts `text/event-stream`. With `cache`, a request
    answered before is answered from the result cache, and a new answer is kept there.
    """
    started = time.monotonic()
    streaming = "text/event-stream" in request.headers.get("accept", "")
    use = CacheUse.decide(caller, options, graph, cache, streaming=streaming)
    if use.hit is not None:
        return cached_answer(options, graph, use, started)
    job = await gateway.door.start_job(
        options.id or str(uuid.uuid4()),
        graph,
        options,
        caller=caller,
        echo_input=echo_input,
        workflow=workflow,
    )
    if streaming:
        return event_stream(job.record)
    if options.answered_at_once:
        accepted = Accepted(id=job.id, prompt=job.prompt, status="ok")
        return JSONResponse(accepted.model_dump(), status_code=202)
    assert job.task is not None
    outcome = await job.task
    use.keep(CachedResult.of(outcome))  # its files by reference: nothing is read
    return streamed_answer(outcome, use.headers())


def streamed_answer(outcome: JobOutcome, headers: dict[str, str]) -> Response:
    """A succeeded job's 200 body, its files' base64 made in pieces as it goes out: never a
    whole file's in memory. A small one, whose files are in memory already, is sent whole (a
    stream costs a task per answer)."""
    return streamed_body(prompt_answer(outcome), headers)


def streamed_json(payload: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON body whose ResultFile leaves are written as their base64, made in pieces as it
    goes out (app.core.streamed_json), with its Content-Length; a small one whose files are all
    in memory, whole."""
    return streamed_body(StreamedJson.of(payload), headers)


def streamed_body(body: StreamedJson, headers: dict[str, str] | None = None) -> Response:
    headers = dict(headers or {})
    if body.small:
        return Response(body.whole(), media_type="application/json", headers=headers)
    headers["Content-Length"] = str(body.size)
    return StreamingResponse(body.chunks(), media_type="application/json", headers=headers)


CACHE_NAME = "comfy-gateway"  # this cache's name in Cache-Status (RFC 9211)


@dataclass(frozen=True)
class CacheAsk:
    """A request's wish to use the result cache, and that cache (None: RESULT_CACHE_MAX_MB is
    off)."""

    store: ResultCache | None
    external_ok: bool = False  # also for graphs that read URLs or input files


@dataclass
class CacheUse:
    """What the result cache does for one request: its key, a hit, and what to tell the client."""

    store: ResultCache | None = None  # where to keep the answer; None: nowhere
    key: str | None = None
    hit: CachedResult | None = None
    status: str | None = None  # the Cache-Status value; None: the cache is not involved

    @classmethod
    def decide(
        cls,
        caller: Caller,
        options: JobOptions,
        graph: Graph,
        ask: CacheAsk | None,
        *,
        streaming: bool,
    ) -> CacheUse:
        """For POST /prompt and the like: only when asked, and only for a synchronous answer."""
        if ask is None:
            return cls()
        store = ask.store
        if store is None:
            return cls(status=f"{CACHE_NAME}; fwd=bypass; detail=off")
        if streaming or options.answered_at_once or options.upload is not None:
            return cls(status=f"{CACHE_NAME}; fwd=bypass; detail=not-synchronous")
        if options.credentials or options.model_credentials:
            # What it makes may come from a source only its own credentials open: kept, it would
            # reach a later request that never proved access (app.models.proof).
            return cls(status=f"{CACHE_NAME}; fwd=bypass; detail=credentials")
        convert = options.convert_output.model_dump(mode="json") if options.convert_output else None
        key = digest({"prompt": graph, "convert_output": convert})
        return cls.consult(store, graph, cache_key(key, caller), external_ok=ask.external_ok)

    @classmethod
    def consult(
        cls,
        store: ResultCache,
        graph: Graph,
        key: str,
        *,
        external_ok: bool,
        read: bool = True,
        write: bool = True,
    ) -> CacheUse:
        """Look the key up, unless the graph may not be cached or the client said not to."""
        random = random_reason(graph)
        reason = random or (None if external_ok else external_reason(graph))
        if reason is not None:
            log.info("result cache not used: %s", reason)
            store.bypassed()
            detail = "random" if random else "external"
            return cls(status=f"{CACHE_NAME}; fwd=bypass; detail={detail}")
        keep = store if write else None
        if not read:  # Cache-Control: no-cache or no-store
            return cls(keep, key, None, f"{CACHE_NAME}; fwd=request")
        hit = store.get(key)
        return cls(keep, key, hit, f"{CACHE_NAME}; hit" if hit else f"{CACHE_NAME}; fwd=miss")

    def keep(self, result: CachedResult) -> None:
        """Keep an answer for the next identical request, if this one may."""
        if self.store is not None and self.key is not None and self.store.put(self.key, result):
            self.status = f"{self.status}; stored"

    def headers(self) -> dict[str, str]:
        return {"Cache-Status": self.status} if self.status else {}


def cache_key(key: str, caller: Caller) -> str:
    """A result cache key in the caller's own part of the cache: one key never gets another's
    answer, nor learns (from a hit) that another key ran the same graph."""
    return key if caller.id is None else f"{caller.id}/{key}"


def cached_answer(options: JobOptions, graph: Graph, use: CacheUse, started: float) -> Response:
    """The 200 body of a request answered from the cache: no job ran, so the times are ~0."""
    assert use.hit is not None
    elapsed_ms = round((time.monotonic() - started) * 1000, 1)
    stats = Stats(queue=0, execution=0, postprocess=elapsed_ms, total=elapsed_ms)
    outcome = use.hit.outcome(options.id or str(uuid.uuid4()), graph, stats)
    return streamed_answer(outcome, use.headers())


def event_stream(record: JobView, after: int = 0) -> StreamingResponse:
    async def frames() -> AsyncIterator[bytes]:
        async for event in record.follow(after, idle_s=SSE_HEARTBEAT_S):
            if event is None:
                yield b": keep-alive\n\n"  # a comment keeps proxies from closing a quiet stream
                continue
            yield f"id: {event.id}\nevent: {event.type}\ndata: ".encode()
            # a `complete` event carries the files' base64: streamed, never whole in memory
            async for piece in StreamedJson.of(event.data).chunks():
                yield piece
            yield b"\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)
