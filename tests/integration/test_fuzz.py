"""Every route fuzzed from the gateway's own OpenAPI document (schemathesis), on a real gateway:
no 5xx but a documented 503, and answers that match the document.

The gateway has no models, so no route can start a long job (the workflows and /sdapi/v1 answer
503 or 400 for want of a checkpoint; /prompt runs what ComfyUI runs in milliseconds), and nothing
it is sent leaves this machine: the fuzzer's bodies lose every string that holds `://` and every
upload target before they are sent (no webhook, input URL, model URL or S3 bucket is named).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from tests.integration.harness import Gateway, assert_capacity_whole, graph, running

EXAMPLES = 15  # per operation and mode, besides the examples in the document


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("fuzz-gateway")
    no_models = workdir / "models"
    (no_models / "checkpoints").mkdir(parents=True)
    with running(workdir, MODEL_DIR=str(no_models), MAX_BODY_SIZE_MB="1") as gw:
        yield gw


def offline(value: Any) -> Any:
    """The value without URLs or upload targets: nothing the gateway would fetch or send to."""
    if isinstance(value, dict):
        kept = {k: offline(v) for k, v in value.items() if k not in ("upload", "s3")}
        return kept
    if isinstance(value, list):
        return [offline(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return "not-a-url"
    return value


@pytest.fixture(scope="module")
def api(fuzz_gateway: Gateway) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_gateway.url}/openapi.json")


@pytest.fixture(scope="module")
def known_ids(fuzz_gateway: Gateway) -> dict[str, str]:
    """Path parameters that name a job that exists: the routes then read their other input
    (Last-Event-ID, a v2 output's index) instead of answering 404 at once."""
    with httpx.Client(base_url=fuzz_gateway.url, timeout=60) as c:
        ran = c.post("/prompt", json={"prompt": graph("g1_empty_save"), "id": "fuzz-1"})
        assert ran.status_code == 200, ran.text
        v2 = c.post("/api/v2/jobs", json={"workflow": graph("g1_empty_save")})
        assert v2.status_code == 201, v2.text
    job_id = v2.json()["id"]
    return {"id": "fuzz-1", "job_id": job_id, "asset_id": f"{job_id}.0"}


def fuzz(operation: Any, mode: GenerationMode, known: dict[str, str]) -> list[str]:
    """Send EXAMPLES cases of one operation; what went wrong, one line each."""
    problems: list[str] = []
    names = {p.name for p in operation.path_parameters}
    pinned = {k: v for k, v in known.items() if k in names}
    strategy = operation.as_strategy(mode)
    if pinned and mode is GenerationMode.POSITIVE:
        strategy = operation.as_strategy(mode, path_parameters=pinned)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same cases every run: a failure here is reproducible
        database=None,
        phases=[Phase.explicit, Phase.generate],  # each case is sent once; no shrinking
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        if isinstance(case.body, dict | list | str):
            case.body = offline(case.body)
        response = case.call(timeout=60)
        where = f"{case.method} {case.formatted_path} ({mode.value})"
        if response.status_code >= 500:
            documented = operation.definition.raw.get("responses", {})
            if response.status_code != 503 or "503" not in documented:
                problems.append(f"{where}: {response.status_code} {response.text[:200]}")
        try:
            case.validate_response(
                response, checks=[response_schema_conformance, content_type_conformance]
            )
        except AssertionError as e:  # schemathesis's failures are AssertionErrors
            problems.append(f"{where}: {str(e)[:300]}")

    try:
        run()
    except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
        assert mode is GenerationMode.NEGATIVE, where_of(operation)
    return problems


def where_of(operation: Any) -> str:
    return f"{operation.method.upper()} {operation.path}"


def test_no_route_answers_a_server_error(
    api: Any, fuzz_gateway: Gateway, known_ids: dict[str, str]
) -> None:
    problems: list[str] = []
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) > 30  # every route: the gateway's, the facades', the workflows'
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            problems += fuzz(operation, mode, known_ids)
    assert problems == []
    with httpx.Client(base_url=fuzz_gateway.url, timeout=60) as c:
        assert_capacity_whole(fuzz_gateway, c)
