"""Azure Blob: comfyui-api's blob-URL rule, their settings, and reads signed with the operator's
account against a real Azurite on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.core.addresses import AddressPolicy
from app.core.errors import UploadFailed
from app.core.options import AzureBlobUpload
from app.core.outcome import ResultFile
from app.core.settings import SettingsError, load_settings
from app.jobs.upload_blob import BLOCK_BYTES, with_query
from app.jobs.uploads import Uploader
from app.media.azure import (
    BlobAccount,
    BlobUrlError,
    canonical_resource,
    container_and_blob,
    is_blob_url,
)
from tests.azurite_server import Azurite


@pytest.mark.parametrize(
    ("url", "blob"),
    [
        ("https://acct.blob.core.windows.net/box/a.png", True),
        ("http://127.0.0.1:10000/devstoreaccount1/box/a.png", True),
        ("http://azurite:10000/devstoreaccount1/box/a.png", True),
        ("http://acct.blob.core.windows.net/box/a.png", False),  # their rule: https only
        ("https://example.com/devstoreaccount1/a.png", False),  # their rule: http only
        ("https://example.com/box/a.png", False),
        ("s3://box/a.png", False),
    ],
)
def test_their_rule_for_blob_urls(url: str, blob: bool) -> None:
    assert is_blob_url(url) is blob


def test_a_blob_url_names_a_container_and_blob_of_the_operators_account() -> None:
    account = BlobAccount("acct", "https://acct.blob.core.windows.net", b"k")
    url = "https://acct.blob.core.windows.net/box/dir/a%20b.png"
    assert container_and_blob(url, account) == ("box", "dir/a b.png")
    with pytest.raises(BlobUrlError, match="storage account 'other'"):
        container_and_blob("https://other.blob.core.windows.net/box/a.png", account)
    with pytest.raises(BlobUrlError, match="container and a blob"):
        container_and_blob("https://acct.blob.core.windows.net/box", account)


def test_connection_strings() -> None:
    dev = BlobAccount.from_connection_string("UseDevelopmentStorage=true")
    assert (dev.name, dev.endpoint) == (
        "devstoreaccount1",
        "http://127.0.0.1:10000/devstoreaccount1",
    )
    sas = BlobAccount.from_connection_string(
        "BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature=?sv=1&sig=x"
    )
    assert (sas.name, sas.key, sas.sas) == ("acct", None, "sv=1&sig=x")
    assert (
        sas.blob_url("box", "a b.png")
        == "https://acct.blob.core.windows.net/box/a%20b.png?sv=1&sig=x"
    )
    plain = BlobAccount.from_connection_string(
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.chinacloudapi.cn"
    )
    assert (plain.endpoint, plain.key) == ("https://acct.blob.core.chinacloudapi.cn", b"key")


def test_account_alone_stops_start_up_naming_why() -> None:
    with pytest.raises(SettingsError, match="DefaultAzureCredential"):
        load_settings(azure_storage_account="acct")
    with pytest.raises(SettingsError, match="need AZURE_STORAGE_ACCOUNT"):
        load_settings(azure_storage_key="a2V5")
    with pytest.raises(SettingsError, match="AZURE_STORAGE_CONTAINERS"):
        load_settings(azure_storage_containers="Not_A_Container")
    settings = load_settings(azure_storage_account="acct", azure_storage_sas_token="?sv=1")
    account = BlobAccount.from_settings(settings)
    assert account is not None and account.sas == "sv=1"


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    server = Azurite(Path(tmp_path_factory.mktemp("azurite"))).start()
    yield server
    server.stop()


def test_a_signed_read_is_what_azurite_accepts(azurite: Azurite) -> None:
    azurite.put_blob("box", "dir/a.bin", b"\x00bytes")
    account = BlobAccount.from_connection_string(azurite.connection_string)
    url = account.blob_url("box", "dir/a.bin")
    answer = httpx.get(url, headers=account.signed_headers("GET", url))
    assert (answer.status_code, answer.content) == (200, b"\x00bytes")
    wrong = BlobAccount(account.name, account.endpoint, b"not the key")
    refused = httpx.get(url, headers=wrong.signed_headers("GET", url))
    assert refused.status_code == 403
    assert refused.headers["x-ms-error-code"] == "AuthorizationFailure"


def blob_uploader(account: BlobAccount) -> Uploader:
    return Uploader(AddressPolicy.from_settings(load_settings()), timeout_s=30.0, azure=account)


@pytest.mark.parametrize("size", [BLOCK_BYTES * 2 + 4321, BLOCK_BYTES, 1000])
async def test_an_upload_goes_in_blocks_when_large_and_in_one_put_when_small(
    azurite: Azurite, tmp_path: Path, size: int
) -> None:
    """Azure holds the very bytes, typed; a large file's blob is the block list that committed
    it (Put Block, Put Block List: query parameters signed as Azure's Shared Key wants)."""
    azurite.put_blob("outputs", "first.png", b"")  # makes the container
    path = tmp_path / "big.png"
    path.write_bytes(os.urandom(size))
    store = blob_uploader(BlobAccount.from_connection_string(azurite.connection_string))
    try:
        url = await store.store(
            AzureBlobUpload(container="outputs", blob_prefix=f"{size}/"),
            ResultFile("big.png", size, path=path),
        )
    finally:
        await store.aclose()
    assert url == f"{azurite.endpoint}/outputs/{size}/big.png"
    blob = azurite.get_blob("outputs", f"{size}/big.png")
    assert blob.status_code == 200, blob.text
    assert (blob.content, blob.headers["content-type"]) == (path.read_bytes(), "image/png")
    listing = azurite.signed(
        "GET", f"outputs/{size}/big.png", query="blocklisttype=all&comp=blocklist"
    )
    assert listing.status_code == 200, listing.text
    # committed and uncommitted alike: a large file's three, all committed; none for Put Blob
    assert listing.text.count("<Block>") == (3 if size > BLOCK_BYTES else 0)


async def test_a_large_upload_to_a_missing_container_names_azures_code(
    azurite: Azurite, tmp_path: Path
) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(os.urandom(BLOCK_BYTES + 1))
    store = blob_uploader(BlobAccount.from_connection_string(azurite.connection_string))
    try:
        with pytest.raises(UploadFailed, match="Azure Blob answered ContainerNotFound") as caught:
            await store.store(
                AzureBlobUpload(container="missing"),
                ResultFile("big.png", BLOCK_BYTES + 1, path=path),
            )
    finally:
        await store.aclose()
    assert caught.value.details == {"filename": "big.png", "store_error": "ContainerNotFound"}


def test_a_blocks_query_follows_a_sas_token_and_is_signed_decoded_and_sorted() -> None:
    sas = BlobAccount("acct", "https://acct.blob.core.windows.net", sas="sv=1&sig=x")
    block = with_query(sas.blob_url("box", "a.png"), comp="block", blockid="MDAwMDAx+/=")
    assert block == (
        "https://acct.blob.core.windows.net/box/a.png?sv=1&sig=x&comp=block&blockid=MDAwMDAx%2B%2F%3D"
    )
    keyed = with_query("https://acct.blob.core.windows.net/box/a.png", comp="block", blockid="QQ==")
    assert canonical_resource("acct", keyed) == "/acct/box/a.png\nblockid:QQ==\ncomp:block"
