"""The keys of the tenants' gateway (conftest's `tenant_gateway`), a client for each (conftest's
`alice`, `bob` and `admin` fixtures), and a way to leave its ComfyUI idle after a test."""

from __future__ import annotations

import json

import httpx

from tests.integration.harness import Gateway
from tests.integration.test_prompt import wait_for_comfy_queue

ALICE = "alice-key-0123456789abcdef"
BOB = "bob-key-0123456789abcdef"
ADMIN = "ops-admin-key-0123456789"
METERED = "metered-key-0123456789abcd"
SOLO = "solo-key-0123456789abcdef"
SECRETS = (ALICE, BOB, ADMIN, METERED, SOLO)
MAX_INPUT_PIXELS = 2048 * 2048
ENV = {
    "API_KEYS": f"alice:{ALICE},bob:{BOB},metered:{METERED},solo:{SOLO}",
    "ADMIN_API_KEYS": f"ops:{ADMIN}",
    "KEY_LIMITS": json.dumps(
        {
            "metered": {"requests_per_minute": 60, "burst": 5},
            "solo": {"max_jobs": 1, "max_priority": 0},
        }
    ),
    "MAX_INPUT_PIXELS": str(MAX_INPUT_PIXELS),
    "INPUT_MAX_MB": "1",
    "RESULT_CACHE_MAX_MB": "16",
    "LOG_FORMAT": "json",
    "PROMPT_WEBHOOK_RETRIES": "1",
    "ALLOWED_PRIVATE_NETWORKS": "127.0.0.1/32",  # the tests' webhook receiver
}


def client(gateway: Gateway, key: str) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, timeout=120, headers={"X-API-Key": key})


def leave_comfyui_idle(gateway: Gateway) -> None:
    """Clear ComfyUI's queue and interrupt its job, straight to ComfyUI, and wait until idle."""
    httpx.post(f"{gateway.comfy_url}/queue", json={"clear": True}, timeout=10)
    httpx.post(f"{gateway.comfy_url}/interrupt", timeout=10)
    wait_for_comfy_queue(gateway, running=0)
