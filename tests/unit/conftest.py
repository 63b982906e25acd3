"""What every unit test shares: an environment without the gateway's settings in it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from app.core.settings import Settings
from app.core.settings.theirs import THEIR_NAMES
from tests.integration.receiver import Receiver
from tests.redis_server import RedisServer
from tests.unit.job_rig import Rig, close_rig, make_rig

# Every variable a Settings reads (comfyui-api's names too), and CONFIG_FILE, which names a file
# of more.
VARIABLES = [*(name.upper() for name in Settings.model_fields), *THEIR_NAMES, "CONFIG_FILE"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings built in a test see only what the test sets, never the machine's."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free port, one per test module (the fleet's tests)."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """A real webhook receiver on loopback, one per test module."""
    made = Receiver()
    yield made
    made.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool_rigs(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[int, Rig]]:
    """A fake-ComfyUI job rig of one instance and one of two, for the module (its tests run on
    the module's loop); a test takes one with `pool_rigs[n].reset()`."""
    made = {n: await make_rig(n, tmp_path_factory.mktemp(f"rig{n}")) for n in (1, 2)}
    yield made
    for rig in made.values():
        await close_rig(rig)
