"""Workflow schemas narrowed to one ComfyUI, and the workflow routes' answers before any job runs.

The catalog is a saved /object_info of a real ComfyUI 0.3.75 with the tiny test models; no
ComfyUI runs here, so a request that passes every check ends in 503 `comfy_unavailable`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from app.comfy.catalog import Catalog
from app.core.settings import PROJECT_ROOT, load_settings
from app.main import create_app
from app.registry.load import Registry, Workflow, discover
from app.routes.workflows import mount

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CATALOG = Catalog.from_file(FIXTURES / "object_info.json")
TINY = "tiny-sd15-random.safetensors"
SAMPLERS = CATALOG.object_info["KSampler"]["input"]["required"]["sampler_name"][0]


def catalog(checkpoints: list[str]) -> Catalog:
    """The saved catalog, with these checkpoints installed instead."""
    info = copy.deepcopy(CATALOG.object_info)
    info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = checkpoints
    return Catalog(info, {**CATALOG.models, "checkpoints": checkpoints})


def activated(folder: Path, cat: Catalog = CATALOG, default: str | None = None) -> Registry:
    registry = Registry.load(folder)
    registry.activate(cat, default)
    return registry


def leaf(registry: Registry) -> Workflow:
    return next(w for w in registry.workflows if w.name == "nested/deeper/leaf")


def prop(schema: dict[str, Any], name: str) -> dict[str, Any]:
    properties: dict[str, Any] = schema["properties"][name]
    return properties


def test_choices_become_enums_of_what_comfyui_reports() -> None:
    workflow = leaf(activated(FIXTURES / "workflows_ok"))
    assert workflow.input_model is not None
    schema = workflow.input_model.model_json_schema()
    assert prop(schema, "checkpoint")["enum"] == [TINY]
    assert prop(schema, "sampler_name")["enum"] == SAMPLERS
    assert prop(schema, "sampler_name")["default"] == "euler"
    assert prop(schema, "extra_loras")["items"]["enum"] == ["tiny-lora.safetensors"]
    lora_spec = schema["$defs"]["NestedDeeperLeafLoraSpec"]
    assert lora_spec["properties"]["name"]["enum"] == ["tiny-lora.safetensors"]
    assert prop(schema, "checkpoint")["description"] == "Checkpoint"  # the module's own words


@pytest.mark.parametrize(
    ("installed", "warmup", "default"),
    [
        (["aaa.safetensors", TINY], TINY, TINY),  # the warmup prompt's checkpoint wins
        (["aaa.safetensors", TINY], None, "aaa.safetensors"),  # else the first installed
    ],
)
def test_default_checkpoint(installed: list[str], warmup: str | None, default: str) -> None:
    workflow = leaf(activated(FIXTURES / "workflows_ok", catalog(checkpoints=installed), warmup))
    assert workflow.input_model is not None
    assert workflow.input_model.model_fields["checkpoint"].default == default
    assert workflow.input_model.model_validate({"prompt": "x"}).checkpoint == default
    assert workflow.available


def test_a_checkpoint_that_is_not_installed_is_refused_listing_what_is() -> None:
    model = leaf(activated(FIXTURES / "workflows_ok")).input_model
    assert model is not None
    with pytest.raises(ValidationError) as error:
        model.model_validate({"prompt": "x", "checkpoint": "sd_xl_base_1.0.safetensors"})
    assert TINY in str(error.value)


def test_misspelt_fields_are_refused() -> None:
    model = leaf(activated(FIXTURES / "workflows_ok")).input_model
    assert model is not None
    with pytest.raises(ValidationError, match="stepz"):
        model.model_validate({"prompt": "x", "stepz": 3})


def test_no_checkpoint_installed_makes_a_workflow_unavailable_saying_so() -> None:
    workflow = leaf(activated(FIXTURES / "workflows_ok", catalog(checkpoints=[])))
    assert workflow.reasons == [
        "no checkpoint is installed (ComfyUI's models/checkpoints is empty)"
    ]


def test_workflow_listing_says_why_one_is_unavailable() -> None:
    registry = activated(FIXTURES / "workflows_ok")
    listed = {w.name: (w.available, w.reasons) for w in registry.workflows}
    assert listed == {
        "errors/boom": (True, []),
        "missing/custom_node": (False, ["VHS_VideoCombine is not installed"]),
        "nested/deeper/leaf": (True, []),
        "top": (True, []),
    }


@pytest.fixture
async def app() -> FastAPI:
    app = create_app(load_settings(workflow_dir=FIXTURES / "workflows_ok"))
    app.state.registry.activate(CATALOG, None)
    mount(app, app.state.registry)
    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        yield c


@pytest.mark.parametrize("prefix", ["/workflows", "/workflow"])
@pytest.mark.parametrize(
    ("body", "status", "code", "location"),
    [
        ({"input": {"fail": "value_error"}}, 400, "invalid_request", "input"),
        ({"input": {"fail": "sometimes"}}, 400, "invalid_request", "input.fail"),
        ({"input": {}, "unexpected": 1}, 400, "invalid_request", "unexpected"),
        ({}, 400, "invalid_request", "input"),
        ({"input": {"fail": "bug"}}, 500, "workflow_failed", None),
        ({"input": {"fail": "not_a_graph"}}, 500, "workflow_failed", None),
        ({"input": {}}, 503, "comfy_unavailable", None),  # it got as far as running the job
    ],
)
async def test_answers_before_a_job_runs(
    client: httpx.AsyncClient,
    prefix: str,
    body: dict[str, Any],
    status: int,
    code: str,
    location: str | None,
) -> None:
    response = await client.post(f"{prefix}/errors/boom", json=body)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert response.json().get("location") == location
    if body == {"input": {"fail": "value_error"}}:
        assert response.json()["error"] == "fail=value_error is refused on purpose"


async def test_a_module_bug_is_a_500_naming_the_module_and_logged_with_its_traceback(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="app.registry.load"):
        response = await client.post("/workflows/errors/boom", json={"input": {"fail": "bug"}})
    module = "workflows_ok/errors/boom.py"  # relative: no server paths in answers
    assert response.json()["error"] == f"the workflow module {module} failed: KeyError: 'missing'"
    assert response.json()["details"] == {"module": module, "workflow": "errors/boom"}
    path = str(FIXTURES / module)  # the log has the full path and the traceback
    logged = [r for r in caplog.records if path in r.getMessage()]
    assert logged and logged[0].exc_info is not None


async def test_an_unavailable_workflow_answers_503_with_its_reasons(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/workflows/missing/custom_node", json={"input": {}})
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "workflow_unavailable"
    assert body["details"]["reasons"] == ["VHS_VideoCombine is not installed"]
    assert "VHS_VideoCombine is not installed" in body["error"]


async def test_get_workflows_lists_every_workflow(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/workflows")).json()["workflows"]
    assert [w["route"] for w in listed] == [
        "/workflows/errors/boom",
        "/workflows/missing/custom_node",
        "/workflows/nested/deeper/leaf",
        "/workflows/top",
    ]
    top = listed[-1]
    assert top == {
        "name": "top",
        "route": "/workflows/top",
        "summary": "A red square.",
        "available": True,
        "reasons": [],
    }


async def test_before_start_up_nothing_is_checked_or_mounted() -> None:
    app = create_app(load_settings(workflow_dir=FIXTURES / "workflows_ok"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        listed = (await c.get("/workflows")).json()["workflows"]
        assert {w["available"] for w in listed} == {False}
        assert {tuple(w["reasons"]) for w in listed} == {("not checked yet: starting",)}
        assert (await c.post("/workflows/top", json={"input": {}})).status_code == 404


async def test_mounting_again_replaces_the_routes(app: FastAPI) -> None:
    count = len(app.router.routes)
    app.state.registry.activate(CATALOG, None)
    mount(app, app.state.registry)
    assert len(app.router.routes) == count


@pytest.fixture(scope="module")
def shipped_spec() -> dict[str, Any]:
    app = create_app(load_settings(workflow_dir=PROJECT_ROOT / "workflows"))
    app.state.registry.activate(CATALOG, TINY)
    mount(app, app.state.registry)
    spec: dict[str, Any] = app.openapi()
    return spec


def test_every_shipped_workflow_schema_property_is_described(shipped_spec: dict[str, Any]) -> None:
    undescribed = [
        f"{name}.{prop}"
        for name, schema in shipped_spec["components"]["schemas"].items()
        for prop, definition in schema.get("properties", {}).items()
        if not definition.get("description")
    ]
    assert undescribed == []


@pytest.mark.parametrize("name", [name for name, _ in discover(PROJECT_ROOT / "workflows")])
def test_each_shipped_workflow_has_its_own_documented_schema_and_example(
    shipped_spec: dict[str, Any], name: str
) -> None:
    operation = shipped_spec["paths"][f"/workflows/{name}"]["post"]
    assert f"/workflow/{name}" not in shipped_spec["paths"]  # the alias is hidden
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = shipped_spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(body["properties"]) >= {"id", "input"}
    example = body["examples"][0]
    input_ref = body["properties"]["input"]["$ref"].rsplit("/", 1)[1]
    input_schema = shipped_spec["components"]["schemas"][input_ref]
    assert set(example["input"]) >= set(input_schema.get("required", []))
    assert {"400", "500", "503"} <= set(operation["responses"])
    assert operation["summary"]


def test_shipped_enums_come_from_comfyui(shipped_spec: dict[str, Any]) -> None:
    schemas = shipped_spec["components"]["schemas"]
    checkpoint = schemas["Sd15Txt2imgInput"]["properties"]["checkpoint"]
    assert (checkpoint["enum"], checkpoint["default"]) == ([TINY], TINY)
    assert schemas["SdxlTxt2imgLoraSpec"]["properties"]["name"]["enum"] == ["tiny-lora.safetensors"]
    schedulers = CATALOG.object_info["KSampler"]["input"]["required"]["scheduler"][0]
    assert schemas["Sd15Img2imgInput"]["properties"]["scheduler"]["enum"] == schedulers


async def test_an_example_that_does_not_fit_this_install_makes_the_workflow_unavailable() -> None:
    app = create_app(load_settings(workflow_dir=FIXTURES / "workflows_example_not_installed"))
    app.state.registry.activate(CATALOG, None)
    mount(app, app.state.registry)
    (workflow,) = app.state.registry.workflows
    assert workflow.reasons is not None and len(workflow.reasons) == 1
    assert workflow.reasons[0].startswith("its example input does not work here: ")
    assert "tiny-lora.safetensors" in workflow.reasons[0]  # what is installed
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        good = await c.post("/workflows/x", json={"input": {"lora": "tiny-lora.safetensors"}})
    # its graph still lacks the checkpoint it names, and has no output node
    assert good.status_code == 503
    assert good.json()["details"]["reasons"] == [
        "checkpoint x.safetensors not found",
        "the graph has no output node (such as SaveImage)",
    ]
