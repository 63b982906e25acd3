"""JobHistory keeps finished jobs up to a count, an age and a size; JobRecord replays events."""

from __future__ import annotations

import asyncio

from app.core.errors import ExecutionFailed, Interrupted
from app.core.outcome import JobOutcome, ResultFile
from app.jobs.history import JobHistory
from app.jobs.records import JobRecord


def finished(request_id: str, image_bytes: int = 0, owner: str | None = None) -> JobRecord:
    record = JobRecord(request_id, f"p-{request_id}", owner=owner)
    # Its file is what the history counts against its size (an uploaded one's URL is not).
    output = ResultFile.of_bytes("a.png", b"A" * image_bytes)
    record.end(JobOutcome(request_id, {}, (output,)))
    return record


def test_count_cap_drops_the_oldest_finished() -> None:
    history = JobHistory(max_finished=2, ttl_s=3600)
    running = JobRecord("running", "p-running")
    history.add(running)
    for name in ("a", "b", "c"):
        history.add(finished(name))
    assert history.get((None, "a")) is None
    assert history.get((None, "b")) is not None and history.get((None, "c")) is not None
    assert history.get((None, "running")) is running  # never dropped while it runs


def test_size_cap_drops_the_oldest_results() -> None:
    history = JobHistory(max_finished=100, ttl_s=3600, max_bytes=250)
    for name in ("a", "b", "c"):
        history.add(finished(name, image_bytes=100))
    assert history.get((None, "a")) is None
    assert history.get((None, "b")) is not None and history.get((None, "c")) is not None


def test_the_newest_result_is_kept_even_when_it_alone_is_over_the_size_cap() -> None:
    history = JobHistory(max_finished=100, ttl_s=3600, max_bytes=250)
    history.add(finished("small", image_bytes=100))
    history.add(finished("video", image_bytes=1000))  # a job's result is readable once it ends
    assert history.get((None, "video")) is not None
    assert history.get((None, "small")) is None
    history.add(finished("next", image_bytes=10))
    assert history.get((None, "video")) is None and history.get((None, "next")) is not None


def test_age_cap() -> None:
    history = JobHistory(max_finished=100, ttl_s=0)
    history.add(finished("a"))
    assert history.get((None, "a")) is None


def test_ids_are_each_owners_own() -> None:
    history = JobHistory(max_finished=10, ttl_s=3600)
    mine, theirs = finished("order-123", owner="acme"), finished("order-123", owner="globex")
    history.add(mine)
    history.add(theirs)  # the same id, another key: both kept
    assert history.get(("acme", "order-123")) is mine
    assert history.get(("globex", "order-123")) is theirs
    assert history.get((None, "order-123")) is None
    assert {r.owner for r in history.with_id("order-123")} == {"acme", "globex"}
    again = finished("order-123", owner="acme")
    history.add(again)  # a reused id replaces the key's own finished record only
    assert history.get(("acme", "order-123")) is again
    assert history.get(("globex", "order-123")) is theirs


async def test_follow_replays_then_waits_for_the_end() -> None:
    record = JobRecord("j", "p")
    record.emit("queued", {"id": "j"})
    seen: list[str] = []

    async def follow() -> None:
        async for event in record.follow(0, idle_s=0.05):
            seen.append(event.type if event else "idle")

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.12)
    record.on_comfy_event("progress", {"value": 1, "max": 2, "node": "5"})
    record.end(JobOutcome("j", {}))
    await asyncio.wait_for(task, 2)
    assert seen[0] == "queued"
    assert "idle" in seen
    assert seen[-2:] == ["progress", "complete"]
    assert [e.id for e in record.events] == [1, 2, 3]


async def test_follow_of_a_finished_job_ends_once_the_client_has_everything() -> None:
    record = finished("done")  # events: 1 complete
    for after in (1, 5):  # at the last event, or past it
        replayed = [event async for event in record.follow(after, idle_s=0.05)]
        assert replayed == []
    assert [event.type async for event in record.follow(0) if event] == ["complete"]


def test_a_failed_outcome_ends_the_record_with_its_error() -> None:
    failed = JobRecord("f", "p-f")
    error = ExecutionFailed("node 3 (KSampler) raised", details={"node_id": "3"})
    failed.end(JobOutcome.failed("f", {"3": {}}, error))
    assert failed.status == "failed" and failed.finished
    assert failed.outcome is not None and failed.outcome.error is error
    assert not failed.outcome.succeeded and failed.outcome.files == ()
    assert failed.error == error.body()
    assert failed.events[-1].type == "failed" and failed.events[-1].data["id"] == "f"
    assert failed.result is None and failed.result_bytes == 0
    stopped = JobRecord("i", "p-i")
    stopped.end(JobOutcome.failed("i", {}, Interrupted("the job was interrupted on request")))
    assert stopped.status == "interrupted"


def test_the_first_to_finish_goes_first_whenever_it_started() -> None:
    history = JobHistory(max_finished=2, ttl_s=3600)
    long, short = JobRecord("long", "p-long"), JobRecord("short", "p-short")
    history.add(long)
    history.add(short)  # started later, ends first
    short.end(JobOutcome("short", {}))
    long.end(JobOutcome("long", {}))
    assert [r.id for r in history.finished(5)] == ["long", "short"]  # newest first
    third = finished("third")
    history.add(third)
    assert history.get((None, "short")) is None  # the first to finish went first
    assert [r.id for r in history.finished(5)] == ["third", "long"]
    assert [r.id for r in history.finished(1)] == ["third"]
