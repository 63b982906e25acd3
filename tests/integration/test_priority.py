"""Priority on a real ComfyUI: behind a busy instance, jobs of priorities 0, 5, 0, 9 run 9, 5,
0, 0 (the order read from ComfyUI's own history: when each prompt began), and GET /prompt/{id}
shows their places meanwhile; a key's max_priority refuses one above it. On the session's
gateways (one instance each); the fleet's version is in test_fleet.py.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx

from tests.integration.harness import Gateway
from tests.integration.tenants import SOLO, client
from tests.integration.test_prompt import empty_image, slow_graph, wait_for_status

# Submitted in this order while the instance is busy; they run in RUN_ORDER.
SUBMITTED = [("prio-first-0", 0), ("prio-five", 5), ("prio-second-0", 0), ("prio-nine", 9)]
RUN_ORDER = ["prio-nine", "prio-five", "prio-first-0", "prio-second-0"]


def color_of(name: str) -> int:
    """Each job's EmptyImage color: what finds its prompt in ComfyUI's history."""
    return 0x0A0B00 + [n for n, _ in SUBMITTED].index(name)


def post(gateway: Gateway, body: dict[str, Any]) -> httpx.Response:
    with gateway.client(timeout_s=300) as c:
        return c.post("/prompt", json=body)


def started_order(comfy_url: str, colors: dict[int, str]) -> list[str]:
    """The jobs, by when ComfyUI began each (its history's `execution_start` timestamps)."""
    history = httpx.get(f"{comfy_url}/history", timeout=10).json()
    began: dict[str, int] = {}
    for entry in history.values():
        color = entry["prompt"][2].get("1", {}).get("inputs", {}).get("color")
        if color in colors:
            [start] = [m[1]["timestamp"] for m in entry["status"]["messages"]
                       if m[0] == "execution_start"]  # fmt: skip
            began[colors[color]] = start
    assert set(began) == set(colors.values()), began
    return sorted(began, key=began.__getitem__)


def eventually_placed(read: httpx.Client, names: list[str]) -> dict[str, int | None]:
    """Each job's queue_position, once every one has one (a job reads `queued` a moment before
    ComfyUI's queue holds it)."""
    positions: dict[str, int | None] = {}
    for _ in range(200):
        positions = {name: read.get(f"/prompt/{name}").json()["queue_position"] for name in names}
        if None not in positions.values():
            break
        time.sleep(0.05)
    return positions


def run_behind_a_busy_job(
    gateway: Gateway, busy_id: str, read: httpx.Client, post_to: list[Gateway]
) -> dict[str, int | None]:
    """Submit SUBMITTED while `busy_id` runs, read their queue positions, then interrupt it and
    wait for all four; returns the positions read."""
    with ThreadPoolExecutor(len(SUBMITTED)) as pool:
        answers: dict[str, Future[httpx.Response]] = {}
        for n, (name, priority) in enumerate(SUBMITTED):
            body = {"prompt": empty_image(color_of(name)), "id": name, "priority": priority}
            answers[name] = pool.submit(post, post_to[n % len(post_to)], body)
            wait_for_status(read, name, "queued")
        positions = eventually_placed(read, list(answers))
        assert read.post("/interrupt", json={"id": busy_id}).status_code == 200
        for name, answer in answers.items():
            assert answer.result(timeout=240).status_code == 200, (name, answer.result().text)
    return positions


def test_behind_a_busy_instance_priorities_0_5_0_9_run_9_5_0_0(gateway: Gateway) -> None:
    with ThreadPoolExecutor(1) as pool, gateway.client() as c:
        busy = pool.submit(post, gateway, {"prompt": slow_graph(seed=22), "id": "prio-busy"})
        wait_for_status(c, "prio-busy", "running")
        positions = run_behind_a_busy_job(gateway, "prio-busy", c, [gateway])
        assert busy.result(timeout=60).status_code == 409  # interrupted
    assert positions == {name: place for place, name in enumerate(RUN_ORDER)}
    colors = {color_of(name): name for name, _ in SUBMITTED}
    assert started_order(gateway.comfy_url, colors) == RUN_ORDER


def test_a_priority_above_the_keys_max_priority_is_a_located_403(
    tenant_gateway: Gateway,
) -> None:
    with client(tenant_gateway, SOLO) as solo:
        answer = solo.post("/prompt", json={"prompt": empty_image(1), "priority": 1})
        assert answer.status_code == 403, answer.text
        assert answer.json()["location"] == "priority"
        assert "max_priority" in answer.json()["error"]
        wrong = solo.post("/prompt", json={"prompt": empty_image(1), "priority": "high"})
        assert wrong.status_code == 400 and wrong.json()["location"] == "priority"
