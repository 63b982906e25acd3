"""LOG_FORMAT=json: one JSON object per line, with the request id wherever a job is concerned."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import warnings
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from app.core.logs import JsonFormatter, bind_request_id, configure_logging, request_id
from app.core.settings import SettingsError, load_settings


@pytest.fixture
def stderr() -> Iterator[io.StringIO]:
    """Where configure_logging writes; the root logger and hooks are put back afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, sys.excepthook)
    buffer = io.StringIO()
    yield buffer
    root.handlers[:], level, sys.excepthook = saved
    root.setLevel(level)
    logging.captureWarnings(False)


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    text = buffer.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize(
    ("raw", "expected"), [("json", "json"), ("JSON", "json"), ("text", "text"), ("", None)]
)
def test_log_format_setting(monkeypatch: pytest.MonkeyPatch, raw: str, expected: str) -> None:
    if raw:
        monkeypatch.setenv("LOG_FORMAT", raw)
    assert load_settings().log_format == (expected or "text")


def test_bad_log_format_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(SettingsError, match=r"LOG_FORMAT='xml'.*'text' or 'json'"):
        load_settings()


def test_json_lines_carry_the_fields(stderr: io.StringIO) -> None:
    configure_logging("info", "json", stderr)
    logging.getLogger("app.jobs.runner").info("job %s: %d outputs", "job-7", 2)
    logging.getLogger("comfyui").info("%s", 'Prompt executed in 0.01 seconds "quoted"\ttab')
    logging.getLogger("app.jobs.runner").debug("below the level")
    first, second = lines(stderr)
    assert set(first) == {"time", "level", "logger", "message"}
    assert (first["level"], first["logger"], first["message"]) == (
        "INFO", "app.jobs.runner", "job job-7: 2 outputs",
    )  # fmt: skip
    assert datetime.fromisoformat(first["time"]).utcoffset() is not None
    assert first["time"].endswith("Z")
    assert second["logger"] == "comfyui"
    assert second["message"] == 'Prompt executed in 0.01 seconds "quoted"\ttab'


def test_exceptions_and_extras_stay_on_one_line(stderr: io.StringIO) -> None:
    configure_logging("debug", "json", stderr)
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        logging.getLogger("app").exception("failed: %s", "ünïcode", extra={"node_id": "3"})
    (entry,) = lines(stderr)
    assert entry["message"] == "failed: ünïcode"
    assert entry["node_id"] == "3"
    assert "Traceback" in entry["exception"]
    assert "ValueError: bad\nthing" in entry["exception"]


def test_uvicorn_access_lines_are_structured() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", "/prompt?x=1", "1.1", 200), None,
    )  # fmt: skip
    record.color_message = "\x1b[1mcoloured\x1b[0m"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == '127.0.0.1:5000 - "POST /prompt?x=1 HTTP/1.1" 200'
    assert "color_message" not in entry
    assert (entry["method"], entry["path"], entry["status"]) == ("POST", "/prompt?x=1", 200)


async def test_request_id_follows_the_job_into_its_tasks(stderr: io.StringIO) -> None:
    configure_logging("info", "json", stderr)
    log = logging.getLogger("app.jobs.runner")

    async def job(rid: str) -> None:
        bind_request_id(rid)
        log.info("submitting")

        async def delivery() -> None:  # started by the job, like its webhook deliveries
            await asyncio.sleep(0)
            log.info("delivered")

        await asyncio.create_task(delivery())

    await asyncio.gather(job("job-a"), job("job-b"))
    log.info("not about any job")
    entries = lines(stderr)
    by_id: dict[str | None, list[str]] = {}
    for entry in entries:
        by_id.setdefault(entry.get("request_id"), []).append(entry["message"])
    assert by_id == {
        "job-a": ["submitting", "delivered"],
        "job-b": ["submitting", "delivered"],
        None: ["not about any job"],
    }
    assert request_id.get() is None  # the tasks' bindings did not leak out


def test_text_format_is_unchanged(stderr: io.StringIO) -> None:
    configure_logging("warning", "text", stderr)
    logging.getLogger("app.gateway").warning("restarting ComfyUI in %ds", 2)
    logging.getLogger("app.gateway").info("hidden")
    assert stderr.getvalue().rstrip().endswith("WARNING app.gateway: restarting ComfyUI in 2s")
    assert len(stderr.getvalue().splitlines()) == 1


def test_warnings_and_uncaught_errors_are_json_too(stderr: io.StringIO) -> None:
    configure_logging("info", "json", stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("something is deprecated", DeprecationWarning, stacklevel=1)
    try:
        raise KeyError("lost")
    except KeyError as e:
        sys.excepthook(type(e), e, e.__traceback__)
    warned, crashed = lines(stderr)
    assert warned["logger"] == "py.warnings"
    assert "something is deprecated" in warned["message"]
    assert crashed["level"] == "CRITICAL"
    assert "KeyError: 'lost'" in crashed["exception"]
