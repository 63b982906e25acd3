"""http_upload PUTs: only to an address the policy allows, pinned; what a private store answered
stays in the log, and no store's body is ever passed on.

Every store here is a real loopback receiver; a public address appears only in a Pinned built for
the pure error-shaping function, never in a request.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from app.core.addresses import AddressPolicy, Pinned
from app.core.errors import UploadFailed
from app.core.options import HttpUpload, S3Upload
from app.core.outcome import ResultFile
from app.core.s3 import Buckets, s3_error_code
from app.core.settings import load_settings
from app.core.url_prefixes import parse_prefixes
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


def uploader(
    networks: str = "", dns: FakeDNS | None = None, prefixes: tuple[str, ...] = ()
) -> Uploader:
    """An uploader with the operator's header `Authorization: Bearer t` for `prefixes`."""
    addresses = AddressPolicy.from_settings(load_settings(allowed_private_networks=networks))
    if dns is not None:
        addresses.resolver = dns
    return Uploader(
        addresses,
        timeout_s=5.0,
        auth_header=SecretStr("Authorization: Bearer t"),
        auth_prefixes=parse_prefixes(prefixes),
    )


async def put(store: Uploader, url_prefix: str, filename: str = "out_00001_.png") -> str:
    try:
        return await store.store(
            HttpUpload(url_prefix=url_prefix), ResultFile.of_bytes(filename, PNG)
        )
    finally:
        await store.aclose()


async def test_a_put_goes_to_the_checked_address_with_the_name_in_host() -> None:
    receiver = Receiver(host="127.0.0.2")
    # httpx could not resolve store.test itself: stored means stored at the pinned address
    prefix = f"http://store.test:{receiver.port}/out/"
    store = uploader("127.0.0.2/32", FakeDNS({"store.test": [["127.0.0.2"]]}), (prefix,))
    try:
        url = await put(store, prefix)
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


async def test_the_operators_header_goes_only_to_urls_under_its_prefixes() -> None:
    """The operator's store and a client-named one, both real loopback receivers: only PUTs
    under HTTP_UPLOAD_AUTH_PREFIXES carry the header."""
    operators, clients = Receiver(), Receiver()
    prefix = operators.url("/outputs")
    named = [
        (operators.url("/outputs/"), True),
        (operators.url("/outputs/team/"), True),
        (operators.url("/outputs-rival/"), False),  # same host, not under the segment
        (operators.url("/elsewhere/"), False),
        (operators.url("/outputs/../elsewhere/"), False),
        (operators.url("/outputs/%2e%2e/elsewhere/"), False),
        (clients.url("/outputs/"), False),  # another port: the client's receiver
    ]
    try:
        for number, (url_prefix, _) in enumerate(named):
            store = uploader("127.0.0.1/32", prefixes=(prefix,))
            await put(store, url_prefix, filename=f"out_{number}.png")
    finally:
        operators.close()
        clients.close()
    puts = operators.records + clients.records
    assert len(puts) == len(named)
    for number, (url_prefix, gets_it) in enumerate(named):
        [delivery] = [d for d in puts if d.path.endswith(f"/out_{number}.png")]
        assert delivery.headers.get("Authorization") == ("Bearer t" if gets_it else None), (
            url_prefix
        )


async def test_user_info_in_an_upload_url_is_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver()
    receiver.refused_prefixes["/readonly/"] = 403
    url_prefix = f"http://user:pa55word@127.0.0.1:{receiver.port}/readonly/"
    try:
        with pytest.raises(UploadFailed) as caught:
            await put(uploader("127.0.0.1/32"), url_prefix)
        stored = await put(uploader("127.0.0.1/32"), url_prefix.replace("/readonly/", "/ok/"))
    finally:
        receiver.close()
    assert stored == receiver.url("/ok/out_00001_.png")  # what the job's answer keeps
    assert "pa55word" not in str(caught.value.body())
    assert "pa55word" not in caplog.text
    [delivery] = receiver.deliveries("/ok/out_00001_.png")
    assert delivery.headers["Authorization"].startswith("Basic ")  # the client's own, sent


def test_what_s3_says_beyond_its_code_stays_in_the_log() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    denied = ClientError(
        {"Error": {"Code": "AccessDenied", "Message": "User: arn:aws:iam::123456789012:user/"
                   "gateway is not authorized to perform: s3:PutObject"}},
        "PutObject",
    )  # fmt: skip
    assert s3_error_code(denied) == "AccessDenied"
    unreachable = EndpointConnectionError(endpoint_url="http://minio.internal:9000/bucket")
    assert s3_error_code(unreachable) == "EndpointConnectionError"


async def test_a_bucket_the_operator_did_not_list_is_never_asked() -> None:
    store = Uploader(
        AddressPolicy.from_settings(load_settings()),
        timeout_s=5.0,
        buckets=Buckets(frozenset({"renders"})),
    )
    try:
        with pytest.raises(UploadFailed) as caught:
            await store.store(
                S3Upload(bucket="someone-elses"), ResultFile.of_bytes("out_00001_.png", PNG)
            )
    finally:
        await store.aclose()
    assert "S3_BUCKETS: renders" in caught.value.message
    assert store._s3 is None  # no client was even made: nothing was sent anywhere
