"""JobOutcome: one typed outcome per job, and each facade's rendering of it (and of its status and
progress), without a ComfyUI."""

from __future__ import annotations

import base64
import gc
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from app.compat.a1111.generations import progress as sdapi_progress
from app.compat.a1111.state import Generation, SdapiState
from app.compat.v2.jobs import STATUSES as V2_STATUSES
from app.compat.v2.jobs import live_progress, output_file, outputs, progress_of, status_of
from app.compat.v2.state import V2Job
from app.core.keys import Caller
from app.core.outcome import JobOutcome, ResultFile
from app.core.remote_file import RemoteFile
from app.core.schemas import Stats, WorkflowResponse
from app.core.status import STATUSES, JobProgress, ended_status
from app.core.streamed_json import StreamedJson
from app.fleet.results import from_redis, to_redis
from app.fleet.shelf import FileShelf
from app.jobs.records import JobRecord
from app.jobs.result_cache import CachedResult
from app.routes.prompt import STATUS as PROMPT_STATUS

STATS = Stats(queue=1, execution=2, postprocess=3, total=6)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))


def outcome(*files: ResultFile, input: dict[str, Any] | None = None) -> JobOutcome:
    return JobOutcome("job-1", {"9": {"class_type": "SaveImage"}}, files, STATS, input=input)


def rendered(done: JobOutcome) -> dict[str, Any]:
    """The /prompt 200 body as a client reads it."""
    body: dict[str, Any] = json.loads(StreamedJson.of(done.body()).whole())
    return body


# -- the outcome ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "content_type"),
    [
        ("a_00001_.png", "image", "image/png"),
        ("clip_00001_.mp4", "video", "video/mp4"),
        ("voice_00001_.flac", "audio", "audio/flac"),
        ("mesh_00001_.glb", "other", "model/gltf-binary"),
        ("notes_00001_.unknownext", "other", "application/octet-stream"),
    ],
)
def test_a_files_kind_and_content_type_come_from_its_name(
    name: str, kind: str, content_type: str
) -> None:
    file = ResultFile.of_bytes(name, b"x", node="9")
    assert (file.kind, file.content_type, file.size, file.node) == (kind, content_type, 1, "9")


def test_a_file_in_memory_on_disk_or_uploaded(tmp_path: Path) -> None:
    (tmp_path / "b.png").write_bytes(b"on disk")
    in_memory = ResultFile.of_bytes("a.png", b"in memory")
    on_disk = ResultFile("b.png", 7, path=tmp_path / "b.png")
    uploaded = ResultFile("c.png", 5, location="https://bucket/c.png")
    assert in_memory.read() == b"in memory" and on_disk.read() == b"on disk"
    assert on_disk.content == base64.b64encode(b"on disk").decode()
    assert uploaded.stored and uploaded.content == "https://bucket/c.png"
    with pytest.raises(ValueError, match="uploaded"):
        uploaded.read()


def test_base64_is_made_once_per_file() -> None:
    file = ResultFile.of_bytes("a.png", PNG)
    assert file.content is file.content
    assert base64.b64decode(file.content) == PNG


def test_the_prompt_answer_renders_every_file_in_order() -> None:
    files = (ResultFile.of_bytes("a.png", b"one"), ResultFile("b.png", 3, location="s3://b"))
    answer = rendered(outcome(*files))
    assert answer["filenames"] == ["a.png", "b.png"]
    assert answer["images"] == [base64.b64encode(b"one").decode(), "s3://b"]
    assert answer["stats"] == STATS.model_dump(mode="json") and answer["id"] == "job-1"
    workflow = outcome(*files, input={"seed": 1})
    assert isinstance(workflow.head, WorkflowResponse) and rendered(workflow)["input"] == {
        "seed": 1
    }
    assert outcome(*files).body()["images"] == list(files)  # each rendered when it goes out


def test_a_record_holds_its_outcome_and_its_complete_event_is_the_prompt_body() -> None:
    record = JobRecord("job-1", "p-1")
    done = outcome(ResultFile.of_bytes("a.png", b"abc"))
    record.end(done)
    assert record.status == "succeeded" and record.outcome is done
    assert record.events[-1].type == "complete" and record.events[-1].data == done.body()
    assert record.result == done.body()
    assert record.result_bytes == 3  # its bytes: their base64 is made only as it goes out


# -- through a fleet's Redis ------------------------------------------------------------------


SECRET = "fleet-secret-0123456789"


def test_the_fleet_keeps_each_files_metadata_and_where_to_fetch_it_never_its_bytes(
    tmp_path: Path,
) -> None:
    here = FileShelf("http://10.0.0.5:3000/", SECRET)
    (tmp_path / "a.png").write_bytes(PNG)  # a spooled output: on disk, not in memory
    file = ResultFile("a.png", len(PNG), "9", path=tmp_path / "a.png")
    done = outcome(file, input={"seed": 2})
    kept = json.loads(json.dumps(to_redis(done, here)))  # as Redis holds it
    assert "images" not in kept and base64.b64encode(PNG).decode() not in json.dumps(kept)
    [meta] = kept["files"]
    assert {k: meta[k] for k in ("name", "size", "node", "content_type")} == {
        "name": "a.png", "size": len(PNG), "node": "9", "content_type": "image/png",
    }  # fmt: skip
    assert meta["url"].startswith("http://10.0.0.5:3000/internal/fleet/files/")
    # Read back on the gateway that ran it: the file itself, no fetch.
    back = from_redis(kept, here)
    assert back.files == (file,) and back.stats == STATS and back.input == {"seed": 2}
    # On another gateway: fetched from the one that ran it, with the fleet's secret.
    [far] = from_redis(kept, FileShelf("http://10.0.0.6:3000", SECRET)).files
    assert far.remote == RemoteFile(meta["url"], SECRET)
    assert (far.name, far.size, far.node, far.kind) == ("a.png", len(PNG), "9", "image")
    assert far.base64_size == len(base64.b64encode(PNG))  # known without a fetch


def test_a_small_file_in_memory_travels_inline_and_reads_back_anywhere() -> None:
    """An output of up to 1 MiB (the gateway holds it in memory anyway) goes through Redis as
    base64: no second fetch, and gateways that cannot reach each other still answer it."""
    here = FileShelf("http://10.0.0.5:3000/", SECRET)
    kept = json.loads(json.dumps(to_redis(outcome(ResultFile.of_bytes("a.png", PNG, "9")), here)))
    [meta] = kept["files"]
    assert "url" not in meta and base64.b64decode(meta["base64"]) == PNG
    [far] = from_redis(kept, FileShelf("http://10.0.0.6:3000", SECRET)).files
    assert far.remote is None and far.read() == PNG
    assert (far.name, far.size, far.node, far.content_type) == ("a.png", len(PNG), "9", "image/png")


def test_the_shelf_keeps_a_file_exactly_while_the_job_record_does(tmp_path: Path) -> None:
    shelf = FileShelf("http://gw", SECRET)
    record = JobRecord("job-1", "p-1")
    (tmp_path / "a.png").write_bytes(PNG)
    record.end(outcome(ResultFile("a.png", len(PNG), path=tmp_path / "a.png")))
    assert record.outcome is not None
    url = to_redis(record.outcome, shelf)["files"][0]["url"]
    assert shelf.local(url) is record.outcome.files[0]
    del record
    gc.collect()
    assert shelf.local(url) is None  # its record let go: the token is unknown


def test_the_shelf_asks_for_the_fleets_secret() -> None:
    shelf = FileShelf("http://gw", SECRET)
    assert shelf.allows(SECRET)
    assert not shelf.allows(None) and not shelf.allows("") and not shelf.allows(SECRET + "x")


def test_an_uploaded_jobs_files_read_back_as_locations() -> None:
    shelf = FileShelf("http://gw", SECRET)
    kept = to_redis(outcome(ResultFile("a.png", 3, "9", location="https://host/a.png")), shelf)
    [file] = from_redis(kept, shelf).files
    assert file.stored and file.content == "https://host/a.png"
    assert (file.size, file.node) == (3, "9")


# -- the result cache keeps files, not base64 --------------------------------------------------


def test_the_result_cache_keeps_the_outcomes_files() -> None:
    done = outcome(ResultFile.of_bytes("a.png", b"abc"))
    kept = CachedResult.of(done)
    assert kept.files == done.files  # by reference (a spooled one's keeper comes with it)
    again = rendered(kept.outcome("job-2", {}, STATS))
    assert again["images"] == [base64.b64encode(b"abc").decode()] and again["id"] == "job-2"


# -- one status and progress vocabulary, one table per facade ---------------------------------


def test_every_status_has_its_word_in_every_facades_table() -> None:
    assert set(PROMPT_STATUS) == set(STATUSES) == set(V2_STATUSES)
    assert all(PROMPT_STATUS[s] == s for s in STATUSES)  # /prompt says the gateway's own words
    assert V2_STATUSES["interrupted"] == "canceled"


@pytest.mark.parametrize(
    ("error", "status"),
    [(None, "succeeded"), ({"code": "interrupted"}, "interrupted"), ({"code": "x"}, "failed")],
)
def test_an_ending_has_one_status(error: dict[str, Any] | None, status: str) -> None:
    assert ended_status(error) == status


def test_progress_reads_comfyuis_steps() -> None:
    progress = JobProgress.of({"value": 3, "max": 12, "node": 5})
    assert (progress.node, progress.step, progress.max) == ("5", 3, 12)
    assert progress.fraction == 0.25 and progress.percent == 25.0
    assert JobProgress.of({}).fraction == 0.0  # no steps reported
    assert JobProgress.of({"value": 20, "max": 10}).fraction == 1.0


def v2_job() -> V2Job:
    graph = {"9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "out"}}}
    return V2Job("job-1", graph, datetime(2026, 1, 1, tzinfo=UTC))


def test_v2_renders_status_progress_and_outputs_from_the_record() -> None:
    record = JobRecord("job-1", "p-1")
    assert status_of(record) == "queued" and status_of(None) == "expired"
    record.on_comfy_event("progress", {"value": 1, "max": 4, "node": "3"})
    assert progress_of(record) == {"value": 0.25, "nodes_done": 0, "nodes_total": 0}
    assert live_progress({"value": 1, "max": 4, "node": 3}) == {
        "value": 0.25, "nodes_done": 0, "nodes_total": 0,
        "current_node": "3", "step": 1, "steps": 4,
    }  # fmt: skip
    record.end(outcome(ResultFile.of_bytes("out_00001_.png", PNG, node="9")))
    [output] = outputs(v2_job(), record, "http://gw")
    assert output["name"] == "out_00001_.png" and output["node_id"] == "9"
    assert (output["type"], output["content_type"]) == ("image", "image/png")
    assert output["size_bytes"] == len(PNG) and output["id"] == "job-1.0"
    found = output_file(record, 0)
    assert found is not None and found.read() == PNG
    assert output_file(record, 1) is None


def test_v2_names_the_node_that_wrote_each_file_even_where_prefixes_agree() -> None:
    """Two save nodes with one prefix: the outcome knows which wrote what; a name cannot say."""
    save = {"class_type": "SaveImage", "inputs": {"filename_prefix": "out"}}
    job = V2Job("job-1", {"7": save, "9": save}, datetime(2026, 1, 1, tzinfo=UTC))
    record = JobRecord("job-1", "p-1")
    record.end(outcome(ResultFile.of_bytes("out_00001_.png", PNG, node="7"),
                       ResultFile.of_bytes("out_00002_.png", PNG, node="9")))  # fmt: skip
    assert [o["node_id"] for o in outputs(job, record, "http://gw")] == ["7", "9"]
    # Read back from a fleet's Redis on another gateway, each file keeps its node.
    assert record.outcome is not None
    fleet = JobRecord("job-1", "p-1")
    kept = to_redis(record.outcome, FileShelf("http://gw-1", SECRET))
    fleet.end(from_redis(kept, FileShelf("http://gw-2", SECRET)))
    assert [o["node_id"] for o in outputs(job, fleet, "http://gw")] == ["7", "9"]


def test_v2_has_no_bytes_of_an_uploaded_output() -> None:
    record = JobRecord("job-1", "p-1")
    record.end(outcome(ResultFile("out_00001_.png", 3, location="https://host/x.png")))
    assert output_file(record, 0) is None


class FakeGateway:
    def __init__(self, record: JobRecord) -> None:
        self.record = record
        self.door = self  # the facade asks the gateway's door

    def running_jobs(self, caller: Caller) -> int:
        return 1

    async def running_job(self, job_id: str, caller: Caller, owner: str | None) -> JobRecord:
        return self.record


async def test_sdapi_progress_counts_images_done_and_the_running_steps() -> None:
    record = JobRecord("sdapi-1", "p-1")
    record.on_comfy_event("progress", {"value": 5, "max": 10, "node": "3"})
    generation = Generation(total=2, done=1, job_id="sdapi-1")
    state = SdapiState(running=[generation])
    answer = await sdapi_progress(FakeGateway(record), Caller(None), [state])  # type: ignore[arg-type]
    assert answer["progress"] == 0.75  # one image of two, and half of the second
    assert (answer["state"]["sampling_step"], answer["state"]["sampling_steps"]) == (5, 10)
    assert answer["state"]["job"] == "sdapi-1" and answer["state"]["job_no"] == 1


def test_a_result_recorded_by_an_earlier_version_reads_back_with_its_files() -> None:
    """During a rolling upgrade Redis may hold results with their base64 (or URLs) inline."""
    kept = {"id": "j", "filenames": ["a.png", "b.png"], "images": [
        base64.b64encode(PNG).decode(), "https://host/b.png"]}  # fmt: skip
    here, uploaded = from_redis(kept, FileShelf("http://gw", SECRET)).files
    assert here.read() == PNG and uploaded.location == "https://host/b.png"
