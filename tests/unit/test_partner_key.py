"""The partner-node key (`api_key_comfy_org`): a SecretStr from the request to ComfyUI's
`extra_data`, through the fleet's queue in clear, and nowhere else: not in a dump, a repr, an
error, the job's record, its events, its webhooks or the log. A job's progress webhook, on the
gateway's own runner: started, then progress, with the job's outcome webhook once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from pydantic import ValidationError

from app.compat.comfy.submit import check_partner_key
from app.compat.v2.submission import extra_data_problem, job_options
from app.core.addresses import AddressPolicy
from app.core.errors import InvalidRequest
from app.core.keys import Caller
from app.core.options import JobOptions
from app.core.settings import load_settings
from app.fleet.spec import dump_options
from app.jobs.progress_hooks import ProgressHooks
from app.jobs.result_cache import ResultCache
from app.jobs.webhooks import WebhookSender
from app.routes.respond import CacheAsk, CacheUse
from tests.integration.receiver import Receiver
from tests.unit.job_rig import Rig, close_rig, graph, make_rig

KEY = "comfyui-0123456789abcdef0123456789abcdef"
ON_THE_RIG = pytest.mark.asyncio(loop_scope="module")  # the rig's loop: the module's


def test_the_key_is_a_secret_everywhere_but_comfyuis_extra_data() -> None:
    options = JobOptions(api_key_comfy_org=KEY)  # type: ignore[arg-type]
    assert KEY not in repr(options) and KEY not in str(options)
    assert KEY not in options.model_dump_json()
    assert options.comfy_extra_data() == {"api_key_comfy_org": KEY}
    assert JobOptions().comfy_extra_data() == {}
    # The fleet's queue carries it to the gateway that runs the job (docs/threat-model.md).
    carried = JobOptions.model_validate(dump_options(options))
    assert carried.comfy_extra_data() == {"api_key_comfy_org": KEY}


@pytest.mark.parametrize(
    ("value", "words"),
    [("", "1-512 characters"), ("x" * 513, "1-512 characters"), ("with space" + KEY, "printable"),
     ("k\u00e9y" + KEY, "printable"), ("line\n" + KEY, "printable")],
)  # fmt: skip
def test_a_bad_key_is_a_located_error_that_never_repeats_it(value: str, words: str) -> None:
    with pytest.raises(ValidationError) as raised:
        JobOptions(api_key_comfy_org=value)  # type: ignore[arg-type]
    [error] = raised.value.errors()
    assert error["loc"] == ("api_key_comfy_org",) and words in error["msg"]
    assert (value or "\0") not in error["msg"]
    v2 = extra_data_problem({"extra_data": {"api_key_comfy_org": value}})
    if value:  # the proxy takes "" as no key
        assert v2 is not None and v2[0] == 400 and value not in v2[2]
    with pytest.raises(InvalidRequest) as passthrough:
        check_partner_key({"api_key_comfy_org": value})
    assert passthrough.value.location == "extra_data.api_key_comfy_org"
    assert (value or "\0") not in passthrough.value.message


def test_the_result_cache_never_sees_the_key() -> None:
    """Its key is the graph and convert_output; its record, the files."""
    ask = CacheAsk(ResultCache(1 << 20))
    graph = {"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}
    keyed = JobOptions(api_key_comfy_org=KEY)  # type: ignore[arg-type]
    uses = [CacheUse.decide(Caller("alice"), o, graph, ask, streaming=False)
            for o in (keyed, JobOptions())]  # fmt: skip
    assert uses[0].key is not None and uses[0].key == uses[1].key
    assert KEY not in uses[0].key


def test_v2_passes_its_extra_data_key_on() -> None:
    assert job_options({"extra_data": {"api_key_comfy_org": KEY}}).comfy_extra_data() == {
        "api_key_comfy_org": KEY
    }
    assert job_options({}).comfy_extra_data() == {}
    assert extra_data_problem({"extra_data": {"api_key_comfy_org": 5}}) is not None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    made = await make_rig(1, tmp_path_factory.mktemp("rig"))
    settings = load_settings(allow_private_urls=True)
    made.runner.progress = ProgressHooks(WebhookSender(settings), per_s=1000, concurrency=4)
    await made.runner.sender.aclose()
    made.runner.sender = WebhookSender(settings)
    made.runner.addresses = AddressPolicy.from_settings(settings)
    yield made
    await made.runner.progress.aclose()
    await close_rig(made)


async def arrived(receiver: Receiver, path: str, count: int) -> list[Any]:
    for _ in range(1000):
        if len(got := receiver.deliveries(path)) >= count:
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path}: {len(receiver.deliveries(path))} deliveries, wanted {count}")


@ON_THE_RIG
async def test_the_key_reaches_comfyui_and_nothing_else(
    rig: Rig, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    rig.reset()
    caplog.set_level(logging.DEBUG)
    options = JobOptions(
        api_key_comfy_org=KEY,  # type: ignore[arg-type]
        webhook_v2=receiver.url("/k/outcome"),  # type: ignore[arg-type]
        progress_webhook=receiver.url("/k/progress"),  # type: ignore[arg-type]
    )
    job = await rig.runner.start("keyed", graph(filename_prefix="k"), options, owner="alice")
    plain = await rig.runner.start("plain", graph(filename_prefix="p"), owner="alice")
    assert job.waiter is not None
    assert rig.comfy.extra_data == {job.waiter.prompt_id: {"api_key_comfy_org": KEY}}
    tracker, prompt_id = rig.instances[0].tracker, job.waiter.prompt_id
    tracker.handle("execution_start", {"prompt_id": prompt_id})
    tracker.handle("executing", {"prompt_id": prompt_id, "node": "4"})
    tracker.handle("progress", {"prompt_id": prompt_id, "node": "4", "value": 1, "max": 4})
    started, progress = await arrived(receiver, "/k/progress", 2)
    assert (started.json()["type"], progress.json()["type"]) == ("job.started", "job.progress")
    assert progress.json()["node_name"] == "SaveImage" and progress.json()["percent"] == 25.0
    rig.finish(job)
    await arrived(receiver, "/k/outcome", 1)
    await asyncio.sleep(0)
    assert plain.waiter is not None  # placed
    assert plain.waiter.prompt_id not in rig.comfy.extra_data  # no key: no extra_data at all
    rig.finish(plain)
    await rig.runner.drain(5)
    said = [caplog.text, repr(job.record), *(repr(e) for e in job.record.events)]
    said += [d.body.decode() for d in receiver.deliveries("/k/outcome")]
    said += [d.body.decode() for d in receiver.deliveries("/k/progress")]
    assert all(KEY not in text for text in said)
    assert len(receiver.deliveries("/k/outcome")) == 1
    assert "plain" not in {d.json()["id"] for d in receiver.deliveries("/k/progress")}
