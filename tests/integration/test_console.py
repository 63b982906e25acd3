"""The operator page, /console, on the tenants' gateway (conftest's `tenant_gateway`: keys are
tenants, and it has an admin key), in Debian's chromium driven by Playwright (no browser is
downloaded: Playwright runs the chromium `make test` installs).

The page loads without a console error, follows a running job's progress as it moves, shows the
finished job's thumbnail, and shows a tenant's text (an error message, a file name) as text: a
tenant's job must not script the operator's page. Its data needs the admin key: a tenant's key
gets 403, no key 401.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.harness import Gateway, comfy_version, graph
from tests.integration.tenants import ADMIN, ALICE, BOB, client

playwright = pytest.importorskip("playwright.sync_api")
# The first test here may start the tenants' gateway (ComfyUI and its warmup) on a busy CPU.
pytestmark = pytest.mark.timeout(300)

PAYLOAD = "<img src=x onerror=window.__xss=1>"  # run as HTML, it would set window.__xss
KEY_STORE = "comfy-gateway.console.key"  # where the page's script keeps the key
# Every value a progress bar of #running takes, as the page sets it (the bar's attribute).
RECORD_PROGRESS = """
document.addEventListener("DOMContentLoaded", () => {
  window.__progress = [];
  new MutationObserver((changes) => {
    for (const change of changes) {
      const bar = change.target;
      if (bar.tagName === "PROGRESS" && bar.closest(".card")) {
        window.__progress.push([bar.closest(".card").dataset.job, bar.value, bar.max]);
      }
    }
  }).observe(document.body, { attributes: true, subtree: true, attributeFilter: ["value"] });
});
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is missing: `make test` installs it")
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page whose tab holds the admin key already (as after the key form), and which records
    console errors and uncaught exceptions."""
    context = browser.new_context()
    context.add_init_script(f"sessionStorage.setItem({json.dumps(KEY_STORE)}, {json.dumps(ADMIN)})")
    context.add_init_script(RECORD_PROGRESS)
    opened = context.new_page()
    opened.errors = []
    opened.on("console", lambda m: m.type == "error" and opened.errors.append(m.text))
    opened.on("pageerror", lambda e: opened.errors.append(str(e)))
    yield opened
    context.close()


def t2i(job_id: str, steps: int, prefix: str = "console") -> dict[str, Any]:
    prompt = graph("t2i")  # 64x64
    prompt["5"]["inputs"]["steps"] = steps
    prompt["7"]["inputs"]["filename_prefix"] = prefix
    return {"prompt": prompt, "id": job_id}


def in_background(gateway: Gateway, key: str, body: dict[str, Any]) -> threading.Thread:
    def post() -> None:
        with client(gateway, key) as c:
            c.post("/prompt", json=body)

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread


def test_the_console_follows_a_running_job_then_shows_a_thumbnail(
    tenant_gateway: Gateway, page: Any
) -> None:
    page.goto(f"{tenant_gateway.url}/console")
    page.wait_for_selector("#instances tbody tr")  # the state arrived with the key
    assert page.inner_text("#instances tbody tr td:nth-child(2)") == "ready"
    # A job that runs until it is interrupted: the page sees it running, whatever the CPU.
    posted = in_background(tenant_gateway, ALICE, t2i("console-watch", steps=5000))
    waiting: list[threading.Thread] = []
    try:
        running = page.wait_for_selector('#running .card[data-job="console-watch"]')
        assert running.inner_text().startswith("console-watch\nalice · prompt")
        page.wait_for_function(
            """() => new Set(window.__progress
                .filter(([job, value, max]) => job === "console-watch" && max === 5000)
                .map(([, value]) => value).filter((value) => value > 0)).size >= 2""",
            timeout=120_000,
        )  # the bar moved, step by step, as the job's events came
        # The newest latent preview, from the job's SSE `preview` events, as an image.
        preview = '#running .card[data-job="console-watch"] img'
        page.wait_for_function(
            f"""() => (document.querySelector('{preview}')?.src || "").startsWith("data:image/")""",
            timeout=120_000,
        )
        # Two jobs wait behind it: the queue lists the higher priority first, with positions.
        for job_id, level in (("console-low", 0), ("console-high", 7)):
            body = {**t2i(job_id, 1), "priority": level}
            waiting.append(in_background(tenant_gateway, ALICE, body))
        page.wait_for_function(
            "() => document.querySelectorAll('#queue tbody tr').length === 2", timeout=60_000
        )
        rows = [r.inner_text().split("\t")[:3] for r in page.query_selector_all("#queue tbody tr")]
        assert rows == [["0", "7", "console-high"], ["1", "0", "console-low"]]
    finally:
        with client(tenant_gateway, ALICE) as c:
            for job_id in ("console-high", "console-low", "console-watch"):
                c.post("/interrupt", json={"id": job_id})
        posted.join(60)
        for thread in waiting:
            thread.join(60)
    page.wait_for_selector('#finished .card.interrupted[data-job="console-watch"]')
    assert page.query_selector('#running .card[data-job="console-watch"]') is None
    # A finished job's first image, as a thumbnail; its file name (the tenant's) as text.
    with client(tenant_gateway, ALICE) as c:
        done = c.post("/prompt", json=t2i("console-thumb", steps=1, prefix=f"console{PAYLOAD}"))
    assert done.status_code == 200, done.text
    finished = '#finished .card[data-job="console-thumb"]'
    page.wait_for_selector(f"{finished} img.thumbnail")
    size = page.eval_on_selector(
        f"{finished} img.thumbnail", "img => [img.naturalWidth, img.naturalHeight]"
    )
    assert size == [64, 64]  # the 64x64 output, not enlarged
    assert PAYLOAD in page.inner_text(finished)
    assert page.evaluate("window.__xss") is None
    assert page.errors == []


def test_a_tenants_text_is_shown_as_text_on_the_operators_page(
    tenant_gateway: Gateway, page: Any
) -> None:
    # A node whose error repeats what the graph gave it (the folder's name), as it runs.
    if comfy_version() != "0.3.75":
        pytest.skip(
            "needs LoadTrainingDataset taking any folder name, as ComfyUI 0.3.75's does; later "
            "ones check it against a list before running (on every version, the file name a "
            "tenant chose is shown as text: the test above)"
        )
    broken = {
        "1": {"class_type": "LoadTrainingDataset", "inputs": {"folder_name": PAYLOAD}},
        "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "x"}},
    }
    with client(tenant_gateway, BOB) as c:
        failed = c.post("/prompt", json={"prompt": broken, "id": "console-xss"})
    assert failed.json()["code"] == "execution_failed" and PAYLOAD in failed.text
    page.goto(f"{tenant_gateway.url}/console")
    row = page.wait_for_selector('#failures tbody tr:has-text("console-xss")')
    assert PAYLOAD in row.inner_text()  # the markup, shown as characters
    assert "LoadTrainingDataset" in row.inner_text()  # the node that failed
    card = page.wait_for_selector('#finished .card[data-job="console-xss"]')
    assert PAYLOAD in card.inner_text()
    assert page.query_selector('img[src="x"]') is None
    assert page.evaluate("window.__xss") is None
    assert page.errors == []


def test_without_a_key_the_page_asks_for_one_and_a_tenants_key_is_refused(
    tenant_gateway: Gateway, browser: Any
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{tenant_gateway.url}/console")
        page.wait_for_selector("#key-form:not([hidden])")
        page.fill("#key", BOB)
        page.click("#key-form button")
        page.wait_for_selector("#problem:has-text('not an admin key')")
        page.fill("#key", ADMIN)
        page.click("#key-form button")
        page.wait_for_selector("#instances tbody tr")
        assert page.evaluate(f"sessionStorage.getItem({json.dumps(KEY_STORE)})") == ADMIN
        assert ADMIN not in page.url
    finally:
        context.close()


@pytest.mark.parametrize(
    ("key", "status"), [(None, 401), (ALICE, 403), (ADMIN, 200)], ids=["none", "tenant", "admin"]
)
def test_the_state_needs_the_admin_key(
    tenant_gateway: Gateway, key: str | None, status: int
) -> None:
    headers = {"X-API-Key": key} if key else {}
    response = httpx.get(f"{tenant_gateway.url}/console/state.json", headers=headers, timeout=30)
    assert response.status_code == status
    if status == 200:
        assert {"instances", "queue", "running", "finished", "models", "peers"} <= set(
            response.json()
        )
