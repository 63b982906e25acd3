"""One real gateway (and so one real ComfyUI on CPU) shared by the whole test session."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.integration.harness import (
    COMFY_HOME,
    GRAPHS,
    MODELS,
    ROOT,
    Gateway,
    comfy_version,
    running,
)
from tests.integration.receiver import Receiver
from tests.redis_server import RedisServer


def pytest_report_header() -> str:
    return f"ComfyUI {comfy_version()} at {COMFY_HOME} (TEST_COMFY_HOME)"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


def seed_inputs(input_dir: Path) -> None:
    """The input images the shared graphs load: ComfyUI's example.png and a 64x64 gradient."""
    shutil.copy(COMFY_HOME / "input" / "example.png", input_dir)
    gradient = Image.new("RGB", (64, 64))
    gradient.putdata([(x * 4, y * 4, 128) for y in range(64) for x in range(64)])
    gradient.save(input_dir / "in64.png")


@pytest.fixture(scope="session")
def shared_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The gateway most tests share; modules with a `gateway` of their own can still reach it."""
    if not (MODELS / "checkpoints" / "tiny-sd15-random.safetensors").exists():
        pytest.fail("the tiny checkpoint is missing: run `make models` (make test does)")
    workdir = tmp_path_factory.mktemp("gateway")
    (workdir / "input").mkdir()
    seed_inputs(workdir / "input")
    # The shipped workflows, and a warmup that makes the tiny checkpoint their default.
    workflows = {
        "WORKFLOW_DIR": str(ROOT / "workflows"),
        "WARMUP_PROMPT_FILE": str(GRAPHS / "t2i.json"),
    }
    with running(workdir, MAX_BODY_SIZE_MB="1", **workflows) as gw:
        yield gw


@pytest.fixture(scope="session")
def cache_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway with the result cache on and room for two jobs (the /api/v1 and cache tests).

    Two, not one: ComfyUI reports a finished prompt gone a moment after its outputs are read,
    and a cap of one would refuse the next test's request in that moment.
    """
    workdir = tmp_path_factory.mktemp("cache-gateway")
    (workdir / "input").mkdir()
    seed_inputs(workdir / "input")
    with running(workdir, RESULT_CACHE_MAX_MB="16", MAX_QUEUE_DEPTH="2") as gw:
        yield gw


@pytest.fixture(scope="session")
def tenant_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway whose keys are tenants: two keys, an admin key, limits, input caps
    (tests.integration.tenants), with the shipped workflows for /sdapi/v1."""
    from tests.integration.tenants import ENV

    workdir = tmp_path_factory.mktemp("tenant-gateway")
    (workdir / "input").mkdir()
    seed_inputs(workdir / "input")
    workflows = {
        "WORKFLOW_DIR": str(ROOT / "workflows"),
        "WARMUP_PROMPT_FILE": str(GRAPHS / "t2i.json"),
    }
    with running(workdir, **ENV, **workflows) as gw:
        yield gw


@pytest.fixture(scope="session")
def gateway(shared_gateway: Gateway) -> Gateway:
    return shared_gateway


@pytest.fixture
def client(gateway: Gateway) -> Iterator[httpx.Client]:
    with gateway.client() as c:
        yield c


# Clients of the tenants' keys, on the test module's `gateway` (test_tenants*.py name it).


@pytest.fixture
def alice(gateway: Gateway) -> Iterator[httpx.Client]:
    from tests.integration.tenants import ALICE, client

    with client(gateway, ALICE) as c:
        yield c


@pytest.fixture
def bob(gateway: Gateway) -> Iterator[httpx.Client]:
    from tests.integration.tenants import BOB, client

    with client(gateway, BOB) as c:
        yield c


@pytest.fixture
def admin(gateway: Gateway) -> Iterator[httpx.Client]:
    from tests.integration.tenants import ADMIN, client

    with client(gateway, ADMIN) as c:
        yield c


# A webhook receiver and a redis-server for each test module that names one.


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()
