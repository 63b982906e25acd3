"""Keys as tenants: named and admin keys, key ids, KEY_LIMITS, the rate limiter, and the 429 the
middleware answers (in the real app, without ComfyUI: its lifespan is not run)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.core.keys import ANONYMOUS, Caller, KeyEntry, caller_of, owner_label, split_entry
from app.core.limits import NO_LIMIT, KeyLimit, RateLimiter, limit_for, parse_key_limits
from app.core.settings import SettingsError, load_settings
from app.edge.api_keys import ApiKeys
from app.main import create_app

KEY = "k3y-0123456789abcdef"
OTHER = "0th3r-key_ABCDEFGHIJ"
ADMIN = "4dmin-key-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- key entries and ids -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "name", "key"),
    [(KEY, None, KEY), (f"acme:{KEY}", "acme", KEY), (f"a.b_c-9:{KEY}", "a.b_c-9", KEY)],
)
def test_an_entry_is_a_key_with_an_optional_name(entry: str, name: str | None, key: str) -> None:
    assert split_entry(entry) == KeyEntry(key, name)


def test_a_named_key_is_known_by_its_name_an_unnamed_one_by_a_hash() -> None:
    assert KeyEntry(KEY, "acme").id == "acme"
    unnamed = KeyEntry(KEY).id
    assert unnamed == "key-" + hashlib.sha256(KEY.encode()).hexdigest()[:12]
    assert KEY not in unnamed and unnamed != KeyEntry(OTHER).id
    assert owner_label(unnamed) == "unnamed"  # metrics never show even the hash
    assert owner_label("acme") == "acme"


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (f"bad name:{KEY}", "has a name other than"),
        (f":{KEY}", "has a name other than"),
        (f"-dash:{KEY}", "has a name other than"),
        (f"{'n' * 65}:{KEY}", "has a name other than"),
        (f"unnamed:{KEY}", "reserved name"),
        (f"default:{KEY}", "reserved name"),
        (f"key-0123456789ab:{KEY}", "reserved name"),
        ("acme:short", "is 5 characters"),
    ],
    ids=["space", "empty", "dash-first", "too-long", "unnamed", "default", "hash-like", "short"],
)
@pytest.mark.parametrize("setting", ["API_KEYS", "ADMIN_API_KEYS"])
def test_a_bad_entry_is_named_without_repeating_the_key(
    monkeypatch: pytest.MonkeyPatch, setting: str, raw: str, words: str
) -> None:
    monkeypatch.setenv(setting, raw)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert setting in message and words in message
    assert KEY not in message and "short" not in message.split(words)[0]


def test_named_and_admin_keys_are_read_from_settings_and_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# customers\nglobex:{OTHER}  # rotated monthly\n{'u' * 16}\n")
    monkeypatch.setenv("API_KEYS", f"acme:{KEY}")
    monkeypatch.setenv("API_KEYS_FILE", str(path))
    monkeypatch.setenv("ADMIN_API_KEYS", f"ops:{ADMIN}")
    settings = load_settings()
    assert settings.api_keys_on
    assert ADMIN not in repr(settings)
    keys = ApiKeys.from_settings(settings)
    assert keys is not None
    assert keys.identify(KEY) == Caller("acme", named=True)
    assert keys.identify(OTHER) == Caller("globex", named=True)
    assert keys.identify("u" * 16) == Caller(KeyEntry("u" * 16).id)
    assert keys.identify(ADMIN) == Caller("ops", named=True, admin=True)
    assert keys.identify(KEY + "x") is None
    assert keys.names() == ["acme", "globex", "ops"]


def test_admin_keys_alone_turn_keys_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_API_KEYS", ADMIN)
    keys = ApiKeys.from_settings(load_settings())
    assert keys is not None and keys.identify(ADMIN) == Caller(KeyEntry(ADMIN).id, admin=True)


def test_a_key_listed_as_admin_too_is_an_admin_key() -> None:
    keys = ApiKeys([f"acme:{KEY}"], admin=[f"acme:{KEY}"])
    found = keys.identify(KEY)
    assert found is not None and found.admin


def test_two_keys_of_one_name_are_one_tenant() -> None:
    keys = ApiKeys([f"acme:{KEY}", f"acme:{OTHER}"])  # a rotation in progress
    assert keys.identify(KEY) == keys.identify(OTHER) == Caller("acme", named=True)


def test_every_key_is_compared_whichever_matched(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    keys = ApiKeys([f"acme:{KEY}", OTHER], admin=[ADMIN])
    for presented in (ADMIN, KEY, OTHER, "wrong-key-0123456789"):
        calls.clear()
        keys.identify(presented)
        assert len(calls) == 3, presented  # no early exit: the time does not say which key


@pytest.mark.parametrize(
    ("caller", "owner", "sees"),
    [
        (Caller("acme", True), "acme", True),
        (Caller("acme", True), "globex", False),
        (Caller("acme", True), None, False),
        (Caller("ops", True, admin=True), "globex", True),
        (ANONYMOUS, None, True),  # API keys off: one caller, who sees it all
        (ANONYMOUS, "acme", False),
    ],
)
def test_who_sees_a_job(caller: Caller, owner: str | None, sees: bool) -> None:
    assert caller.sees(owner) is sees


def test_no_caller_in_the_scope_is_the_anonymous_caller() -> None:
    assert caller_of({"type": "http"}) is ANONYMOUS


# --- KEY_LIMITS --------------------------------------------------------------------------------

LIMITS = {"default": {"requests_per_minute": 60, "max_jobs": 2}, "acme": {"max_jobs": 8}}


@pytest.mark.parametrize(
    "given",
    [
        json.dumps(LIMITS),
        "{default: {requests_per_minute: 60, max_jobs: 2}, acme: {max_jobs: 8}}",
        "file",
        LIMITS,  # from CONFIG_FILE's YAML
    ],
    ids=["json", "inline-yaml", "yaml-file", "mapping"],
)
def test_key_limits_formats(tmp_path: Path, given: object) -> None:
    if given == "file":
        path = tmp_path / "limits.yaml"
        path.write_text(
            "default:\n  requests_per_minute: 60\n  max_jobs: 2\nacme:\n  max_jobs: 8\n"
        )
        given = str(path)
    limits = parse_key_limits(given)
    assert limits == {
        "default": KeyLimit(requests_per_minute=60, max_jobs=2),
        "acme": KeyLimit(max_jobs=8),
    }


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ("/no/such/limits.yaml", "cannot be read"),
        ("{default: [1, 2]}", "default: must be a mapping"),
        ("{default: {rpm: 5}}", "default.rpm: Extra inputs are not permitted"),
        ("{acme: {max_jobs: -1}}", "acme.max_jobs"),
        ("{acme: {requests_per_minute: lots}}", "acme.requests_per_minute"),
        ([1, 2], "must map key names"),  # CONFIG_FILE's YAML
        ("{default: {", "is not YAML or JSON"),
        ('{"acme corp": {max_jobs: 1}}', "'acme corp' is not a key name"),
        ("{1: {max_jobs: 1}}", "1 is not a key name"),
    ],
)
def test_bad_key_limits_are_named(given: object, words: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_key_limits(given)
    assert words in str(caught.value)


def test_key_limits_need_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEY_LIMITS", json.dumps(LIMITS))
    with pytest.raises(SettingsError, match="KEY_LIMITS limits each API key"):
        load_settings()
    monkeypatch.setenv("API_KEYS", KEY)
    assert load_settings().key_limits["acme"].max_jobs == 8


def test_which_limits_apply() -> None:
    limits = parse_key_limits(LIMITS)
    assert limit_for(limits, Caller("acme", named=True)) == KeyLimit(max_jobs=8)
    assert limit_for(limits, Caller("globex", named=True)) == limits["default"]
    assert limit_for(limits, Caller("key-0123456789ab")) == limits["default"]
    assert limit_for(limits, Caller("ops", named=True, admin=True)) is NO_LIMIT
    assert limit_for(limits, Caller("acme", named=True, admin=True)) == KeyLimit(max_jobs=8)
    assert limit_for(limits, ANONYMOUS) is NO_LIMIT


# --- the rate limiter ----------------------------------------------------------------------------


def test_a_burst_then_the_sustained_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limit = KeyLimit(requests_per_minute=60, burst=3)  # one a second, three at once
    assert [limiter.take("acme", limit) for _ in range(3)] == [None, None, None]
    wait_s = limiter.take("acme", limit)
    assert wait_s == pytest.approx(1.0)
    clock.now += 0.5
    assert limiter.take("acme", limit) == pytest.approx(0.5)  # a refusal takes nothing
    clock.now += 0.5
    assert limiter.take("acme", limit) is None
    assert limiter.take("acme", limit) == pytest.approx(1.0)
    clock.now += 60  # idle: the bucket is full again, no fuller
    assert [limiter.take("acme", limit) for _ in range(4)][-1] == pytest.approx(1.0)


def test_a_minute_allows_the_burst_and_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limit = KeyLimit(requests_per_minute=120)  # burst: a minute's worth
    allowed = 0
    for _ in range(60 * 10):  # ten requests a second for a minute
        allowed += limiter.take("k", limit) is None
        clock.now += 0.1
    assert allowed == 120 + 120 - 1  # the full bucket, then what refilled


def test_keys_have_buckets_of_their_own() -> None:
    limiter = RateLimiter(Clock())
    limit = KeyLimit(requests_per_minute=1, burst=1)
    assert limiter.take("acme", limit) is None
    assert limiter.take("acme", limit) is not None
    assert limiter.take("globex", limit) is None
    assert limiter.take("any", NO_LIMIT) is None


# --- the middleware, in the real app -----------------------------------------------------------


@pytest.fixture
async def app() -> FastAPI:
    limits = {"default": {"requests_per_minute": 60, "burst": 2}}
    return create_app(
        load_settings(
            api_keys=f"acme:{KEY},{OTHER}", admin_api_keys=ADMIN, key_limits=json.dumps(limits)
        )
    )


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        yield c


async def test_past_the_rate_a_key_gets_429_with_retry_after(client: httpx.AsyncClient) -> None:
    for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {OTHER}"}):
        first = [await client.get("/prompt/nope", headers=headers) for _ in range(2)]
        assert [r.status_code for r in first] == [404, 404]  # past the key check
        refused = await client.get("/prompt/nope", headers=headers)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        body = refused.json()
        assert body["code"] == "rate_limited"
        assert body["details"] == {"limit": "requests_per_minute", "requests_per_minute": 60,
                                   "burst": 2}  # fmt: skip
        for secret in (KEY, OTHER, "acme", "key-"):
            assert secret not in refused.text
    admin = [await client.get("/prompt/nope", headers={"X-API-Key": ADMIN}) for _ in range(5)]
    assert {r.status_code for r in admin} == {404}  # `default` is not for admin keys
    unknown = await client.get("/prompt/nope", headers={"X-API-Key": "wrong-key-0123456789"})
    assert unknown.status_code == 401  # an unknown key is counted nowhere


async def test_429s_are_counted_per_key_name(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await client.get("/models/nope", headers={"X-API-Key": KEY})
    metrics = (await client.get("/metrics")).text
    assert 'comfy_gateway_key_limited_total{key="acme",limit="requests_per_minute"} 1.0' in metrics
    assert 'comfy_gateway_key_requests_total{key="acme",status="429"} 1.0' in metrics
    assert 'comfy_gateway_key_active_jobs{key="acme"} 0.0' in metrics
    assert "key-" not in metrics and KEY not in metrics
