"""`warnings`: what a request asked for and its job did not honour, in the answer's body (so a
202's webhooks and GET /prompt/{id} say it too), absent when there is nothing to say."""

from __future__ import annotations

import json

from app.core.outcome import JobOutcome, ResultFile
from app.core.streamed_json import StreamedJson
from app.fleet.results import from_redis, to_redis
from app.fleet.shelf import FileShelf
from app.jobs.result_cache import CachedResult

NAMED = ("convert_output.options.mozjpeg (no Pillow equivalent)",)


def outcome(warnings: tuple[str, ...] = ()) -> JobOutcome:
    files = (ResultFile.of_bytes("a.jpg", b"\xff\xd8jpeg"),)
    return JobOutcome(id="r1", prompt={"1": {}}, files=files, warnings=warnings)


def test_the_body_names_what_was_not_honoured() -> None:
    assert outcome(NAMED).body()["warnings"] == list(NAMED)
    streamed = json.loads(StreamedJson.of(outcome(NAMED).body()).whole())
    assert streamed["warnings"] == list(NAMED)
    assert streamed["images"] == [f.content for f in outcome().files]


def test_without_warnings_the_body_has_no_such_field() -> None:
    assert "warnings" not in outcome().body()
    assert "warnings" not in json.loads(StreamedJson.of(outcome().body()).whole())


def test_warnings_survive_the_fleet_and_the_result_cache() -> None:
    shelf = FileShelf()
    back = from_redis(to_redis(outcome(NAMED), shelf), shelf)
    assert back.warnings == NAMED
    assert from_redis(to_redis(outcome(), shelf), shelf).warnings == ()
    cached = CachedResult.of(outcome(NAMED))
    assert cached.outcome("r2", {}, outcome().stats).body()["warnings"] == list(NAMED)
