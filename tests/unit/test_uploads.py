"""http_upload PUTs: only to an address the policy allows, pinned; what a private store answered
stays in the log, and no store's body is ever passed on.

Every store here is a real loopback receiver; a public address appears only in a Pinned built for
the pure error-shaping function, never in a request.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.core.addresses import AddressPolicy, Pinned
from app.core.errors import UploadFailed
from app.core.options import HttpUpload
from app.core.settings import load_settings
from app.jobs.uploads import Uploader, put_failed
from tests.gateway_process import free_port
from tests.integration.receiver import Receiver, loopback_traps
from tests.unit.fakedns import FakeDNS

PNG = b"\x89PNG\r\n\x1a\n" + bytes(40)


@pytest.fixture
def traps() -> Iterator[list[Receiver]]:
    made = loopback_traps()
    yield made
    for receiver in made:
        receiver.close()


def uploader(networks: str = "", dns: FakeDNS | None = None) -> Uploader:
    addresses = AddressPolicy.from_settings(load_settings(allowed_private_networks=networks))
    if dns is not None:
        addresses.resolver = dns
    return Uploader("Authorization: Bearer t", 5.0, addresses)


async def put(store: Uploader, url_prefix: str, filename: str = "out_00001_.png") -> str:
    try:
        return await store.store(HttpUpload(url_prefix=url_prefix), filename, PNG)
    finally:
        await store.aclose()


async def test_a_put_goes_to_the_checked_address_with_the_name_in_host() -> None:
    receiver = Receiver(host="127.0.0.2")
    # httpx could not resolve store.test itself: stored means stored at the pinned address
    store = uploader("127.0.0.2/32", FakeDNS({"store.test": [["127.0.0.2"]]}))
    try:
        url = await put(store, f"http://store.test:{receiver.port}/out/")
    finally:
        receiver.close()
    assert url == f"http://store.test:{receiver.port}/out/out_00001_.png"
    [stored] = receiver.deliveries("/out/out_00001_.png")
    assert stored.headers["Host"] == f"store.test:{receiver.port}"
    assert stored.headers["Authorization"] == "Bearer t"
    assert stored.body == PNG


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "[::1]", "0.0.0.0", "0x7f000001"])
async def test_a_refused_address_fails_the_upload_and_gets_nothing(
    traps: list[Receiver], host: str
) -> None:
    with pytest.raises(UploadFailed) as caught:
        await put(uploader(), f"http://{host}:{traps[0].port}/out/")
    assert caught.value.status == 502
    assert "ALLOWED_PRIVATE_NETWORKS" in caught.value.message
    assert [t.connections for t in traps] == [0, 0, 0]


async def test_dns_rebinding_after_the_check_fails_the_upload(traps: list[Receiver]) -> None:
    """The request's check saw an allowed address; by the PUT the name points at another."""
    store = uploader("127.0.0.2/32", FakeDNS({"rebind.test": [["127.0.0.2"], ["127.0.0.1"]]}))
    prefix = f"http://rebind.test:{traps[0].port}/out/"
    await store.addresses.check(prefix)  # what the request saw: allowed
    with pytest.raises(UploadFailed, match=r"rebind\.test \(127\.0\.0\.1\)") as caught:
        await put(store, prefix)
    assert caught.value.code == "upload_failed"
    assert [t.connections for t in traps] == [0, 0, 0]


async def test_a_private_stores_refusal_is_logged_not_echoed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = Receiver()
    receiver.refused_prefixes["/readonly/"] = 403
    try:
        with pytest.raises(UploadFailed) as caught:
            await put(uploader("127.0.0.1/32"), receiver.url("/readonly/"))
    finally:
        receiver.close()
    assert len(receiver.deliveries("/readonly/out_00001_.png")) == 1  # it was allowed, and sent
    body = caught.value.body()
    url = receiver.url("/readonly/out_00001_.png")
    assert "403" not in str(body).replace(url, "")  # the port may hold "403" by chance
    assert body["details"] == {"filename": "out_00001_.png"}
    assert "private address" in body["error"]
    assert "HTTP 403" in caplog.text  # the operator still learns what happened


async def test_a_private_store_that_is_not_listening_is_logged_not_echoed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed = free_port()  # nothing listens there: whether something does is what stays unsaid
    with pytest.raises(UploadFailed) as caught:
        await put(uploader("127.0.0.1/32"), f"http://127.0.0.1:{closed}/out/")
    assert "ConnectError" not in str(caught.value.body())
    assert "refused" not in str(caught.value.body()).lower()
    assert "ConnectError" in caplog.text


def test_a_public_stores_answer_is_kept() -> None:
    """An expired presigned URL's 403 is worth telling the client; no request is made here."""
    public = Pinned("http://8.8.8.8:80/out/a.png", "8.8.8.8")
    error = put_failed("a.png", "http://store.example/out/a.png", public, "HTTP 403",
                       {"store_status": 403})  # fmt: skip
    assert "HTTP 403" in error.message
    assert error.details == {"filename": "a.png", "store_status": 403}
    private = Pinned("http://10.0.0.1:80/out/a.png", "10.0.0.1")
    hidden = put_failed("a.png", "http://store.example/out/a.png", private, "HTTP 403",
                        {"store_status": 403})  # fmt: skip
    assert "403" not in str(hidden.body())
