"""What a key may spend of what keys share: model downloads and pins (KEY_LIMITS `models`), and
the operator's S3 buckets (S3_BUCKETS). Pure: nothing is fetched."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.downloads import ModelDownloadRequest
from app.core.errors import Forbidden, GatewayError, InvalidRequest
from app.core.keys import ANONYMOUS, Caller, key_id
from app.core.limits import parse_key_limits
from app.core.options import JobOptions
from app.core.settings import SettingsError, load_settings
from app.models.grants import Grants

KEYS = "alice:alice-key-0123456789ab,bob:bob-key-0123456789abcd,carol:carol-key-0123456789a"
LIMITS = '{"alice": {"models": "download", "max_downloads": 2}, "carol": {"models": "pin"}}'
ALICE, BOB, CAROL = (Caller(name, named=True) for name in ("alice", "bob", "carol"))
ADMIN = Caller("ops", named=True, admin=True)
LORA = {"class_type": "LoraLoader", "inputs": {"lora_name": "https://m.example/a.safetensors"}}


def grants(**more: Any) -> Grants:
    settings = load_settings(
        api_keys=KEYS, admin_api_keys="ops:ops-admin-key-0123456789", key_limits=LIMITS, **more
    )
    return Grants(settings)


def located(error: pytest.ExceptionInfo[GatewayError]) -> tuple[int, str | None]:
    return error.value.status, error.value.location


def test_a_key_downloads_only_where_key_limits_grant_it() -> None:
    given = grants()
    assert [given.models(c) for c in (ALICE, BOB, CAROL, ADMIN)] == [
        "download", "none", "pin", "pin",
    ]  # fmt: skip
    assert given.models(ANONYMOUS) == "pin"  # without API keys everything stays open
    assert given.max_downloads(ALICE) == 2 and given.max_downloads(BOB) == 0
    # `default` grants every other key; a key's own entry wins.
    opened = Grants(load_settings(api_keys=KEYS, key_limits='{"default": {"models": "pin"}}'))
    assert opened.models(BOB) == "pin"


@pytest.mark.parametrize("value", ["all", "yes", True])
def test_a_grant_is_one_of_none_download_pin(value: Any) -> None:
    with pytest.raises(ValueError, match=r"alice\.models"):
        parse_key_limits({"alice": {"models": value}})
    with pytest.raises(SettingsError, match="KEY_LIMITS"):
        load_settings(api_keys=KEYS, key_limits={"alice": {"models": value}})


def test_a_model_url_in_a_job_is_a_download_of_its_key() -> None:
    given = grants()
    graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x.ckpt"}},
             "7": LORA}  # fmt: skip
    with pytest.raises(Forbidden) as refused:
        given.check_job(BOB, graph, None)
    assert located(refused) == (403, "prompt.7.inputs.lora_name")
    assert "KEY_LIMITS `models`" in refused.value.message
    for caller in (ALICE, CAROL, ADMIN, ANONYMOUS):
        given.check_job(caller, graph, None)
    given.check_job(BOB, {"1": graph["1"]}, None)  # an installed file: no download, no grant


def test_pinning_needs_its_own_grant() -> None:
    given = grants()
    body = ModelDownloadRequest(url="https://m.example/a.safetensors", folder="loras", pin=True)
    with pytest.raises(Forbidden) as refused:
        given.check_download(ALICE, body)
    assert located(refused) == (403, "pin")
    with pytest.raises(Forbidden) as none:
        given.check_download(BOB, body.model_copy(update={"pin": False}))
    assert located(none) == (403, "url")
    given.check_download(ALICE, body.model_copy(update={"pin": False}))
    given.check_download(CAROL, body)
    given.check_download(ADMIN, body)


def test_the_operators_s3_credentials_serve_only_the_listed_buckets() -> None:
    given = grants(s3_buckets="renders,models")
    s3_lora = {"class_type": "LoraLoader", "inputs": {"lora_name": "s3://payroll/x.safetensors"}}
    with pytest.raises(InvalidRequest) as model:
        given.check_job(ALICE, {"3": s3_lora}, None)
    assert located(model) == (400, "prompt.3.inputs.lora_name")
    assert "S3_BUCKETS: models, renders" in model.value.message
    with pytest.raises(InvalidRequest) as upload:
        given.check_job(ALICE, {}, JobOptions.model_validate({"s3": {"bucket": "payroll"}}))
    assert located(upload) == (400, "s3.bucket")
    with pytest.raises(InvalidRequest) as download:
        given.check_download(
            ADMIN, ModelDownloadRequest(url="s3://payroll/x.safetensors", folder="loras")
        )
    assert located(download) == (400, "url")
    given.check_job(ALICE, {"3": {**s3_lora, "inputs": {"lora_name": "s3://models/x.pt"}}},
                    JobOptions.model_validate({"s3": {"bucket": "renders"}}))  # fmt: skip
    # No list: any bucket the credentials reach, as before.
    grants().check_job(
        ALICE, {"3": s3_lora}, JobOptions.model_validate({"s3": {"bucket": "any-bucket"}})
    )


def test_an_azure_blob_upload_needs_an_account_and_a_listed_container() -> None:
    upload = JobOptions.model_validate({"azure_blob_upload": {"container": "payroll"}})
    with pytest.raises(InvalidRequest) as unset:
        grants().check_job(ALICE, {}, upload)
    assert located(unset) == (400, "azure_blob_upload")
    assert "AZURE_STORAGE_CONNECTION_STRING" in unset.value.message
    given = grants(
        azure_storage_account="acct",
        azure_storage_sas_token="sv=x",
        azure_storage_containers="renders,pictures",
    )
    with pytest.raises(InvalidRequest) as elsewhere:
        given.check_job(ALICE, {}, upload)
    assert located(elsewhere) == (400, "azure_blob_upload.container")
    assert "AZURE_STORAGE_CONTAINERS: pictures, renders" in elsewhere.value.message
    listed = JobOptions.model_validate({"azure_blob_upload": {"container": "renders"}})
    given.check_job(ALICE, {}, listed)
    grants(azure_storage_account="acct", azure_storage_sas_token="sv=x").check_job(
        ALICE, {}, upload
    )  # no list: any container


@pytest.mark.parametrize("name", ["ab", "Pictures", "-pics", "pics-", "pi--cs", "a" * 64, "pi_cs"])
def test_an_azure_container_name_follows_azures_rules(name: str) -> None:
    with pytest.raises(ValueError, match="container"):
        JobOptions.model_validate({"azure_blob_upload": {"container": name}})
    JobOptions.model_validate({"azure_blob_upload": {"container": "pics-2026-x"}})


def test_one_store_per_request() -> None:
    with pytest.raises(ValueError, match="not s3 and azure_blob_upload and http_upload"):
        JobOptions.model_validate({"s3": {"bucket": "abc"}, "azure_blob_upload": {"container":
            "abc"}, "http_upload": {"url_prefix": "https://x.example/"}})  # fmt: skip


def test_a_jobs_owner_stands_for_its_key() -> None:
    given = grants()
    assert given.caller_of("alice") == ALICE
    assert given.caller_of("ops") == ADMIN
    unnamed = key_id("an-unnamed-key-0123456789", None)
    assert given.caller_of(unnamed) == Caller(unnamed)
    assert given.caller_of(None) == ANONYMOUS
