"""The OpenAPI document describes every field, shows an example, and documents 400, not 422."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.settings import load_settings
from app.main import create_app


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return create_app(load_settings()).openapi()


def test_every_schema_property_is_described(spec: dict[str, Any]) -> None:
    undescribed = [
        f"{name}.{prop}"
        for name, schema in spec["components"]["schemas"].items()
        for prop, definition in schema.get("properties", {}).items()
        if not definition.get("description")
    ]
    assert undescribed == []


def test_no_operation_documents_a_422(spec: dict[str, Any]) -> None:
    statuses = {
        status
        for path in spec["paths"].values()
        for operation in path.values()
        for status in operation["responses"]
    }
    assert "422" not in statuses
    assert {"400", "413", "429", "502", "503", "504"} <= statuses


def test_prompt_request_has_a_runnable_example(spec: dict[str, Any]) -> None:
    examples = spec["components"]["schemas"]["PromptRequest"]["examples"]
    graph = examples[0]["prompt"]
    assert {node["class_type"] for node in graph.values()} == {"EmptyImage", "SaveImage"}
