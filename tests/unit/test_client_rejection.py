"""rejection(): ComfyUI 0.3.75's 400 bodies for POST /prompt, turned into our errors."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from app.comfy.rejection import rejection
from app.core.errors import NoOutputs, PromptRejected


def node_error(
    class_type: str, input_name: str, kind: str, message: str, details: str
) -> dict[str, Any]:
    return {
        "errors": [
            {
                "type": kind,
                "message": message,
                "details": details,
                "extra_info": {"input_name": input_name, "received_value": -5},
            }
        ],
        "dependent_outputs": ["3"],
        "class_type": class_type,
    }


NODE_ERRORS = {
    "1": node_error(
        "EmptyImage", "width", "value_smaller_than_min", "Value -5 smaller than min of 1", "width"
    ),
    "2": node_error(
        "ImageScale",
        "upscale_method",
        "value_not_in_list",
        "Value not in list",
        "upscale_method: 'sharpest' not in ['nearest-exact', 'bilinear', 'area', 'bicubic']",
    ),
}

FAILED_VALIDATION = {
    "error": {
        "type": "prompt_outputs_failed_validation",
        "message": "Prompt outputs failed validation",
        "details": "",
        "extra_info": {},
    },
    "node_errors": NODE_ERRORS,
}

NO_SUCH_NODE = {
    "error": {
        "type": "invalid_prompt",
        "message": "Cannot execute because node NoSuchNode does not exist.",
        "details": "Node ID '#1'",
        "extra_info": {},
    },
    "node_errors": {},
}

NO_OUTPUTS = {
    "error": {
        "type": "prompt_no_outputs",
        "message": "Prompt has no outputs",
        "details": "",
        "extra_info": {},
    },
    "node_errors": [],
}


def test_failed_validation() -> None:
    body = copy.deepcopy(FAILED_VALIDATION)
    error = rejection(body)
    assert isinstance(error, PromptRejected)
    assert (error.status, error.code) == (400, "prompt_invalid")
    assert error.location == "prompt.1.inputs.width"
    assert error.details == {"node_errors": NODE_ERRORS}
    assert error.message.startswith("Prompt outputs failed validation")
    for words in ("prompt.1.inputs.width", "EmptyImage", "smaller than min of 1"):
        assert words in error.message
    for words in ("prompt.2.inputs.upscale_method", "ImageScale", "Value not in list"):
        assert words in error.message
    assert body == FAILED_VALIDATION


def test_location_follows_comfyui_order() -> None:
    body = {**FAILED_VALIDATION, "node_errors": {"2": NODE_ERRORS["2"], "1": NODE_ERRORS["1"]}}
    assert rejection(body).location == "prompt.2.inputs.upscale_method"


def test_error_without_input_name_locates_the_node() -> None:
    errors = {
        "7": {
            "errors": [
                {
                    "type": "exception_during_inner_validation",
                    "message": "Exception when validating inner node",
                    "details": "boom",
                    "extra_info": {},
                }
            ],
            "dependent_outputs": ["7"],
            "class_type": "SaveImage",
        }
    }
    error = rejection({**FAILED_VALIDATION, "node_errors": errors})
    assert isinstance(error, PromptRejected)
    assert error.location == "prompt.7"
    assert "boom" in error.message


def test_node_that_does_not_exist() -> None:
    error = rejection(copy.deepcopy(NO_SUCH_NODE))
    assert isinstance(error, PromptRejected)
    assert error.location == "prompt.1.class_type"
    assert "NoSuchNode" in error.message
    assert error.details == {"node_errors": {}}


def test_no_outputs() -> None:
    error = rejection(copy.deepcopy(NO_OUTPUTS))
    assert isinstance(error, NoOutputs)
    assert (error.status, error.code) == (400, "no_outputs")
    assert "output" in error.message


@pytest.mark.parametrize(
    "body",
    [
        {"error": "no prompt", "node_errors": []},
        {"error": {"type": "invalid_prompt", "message": "bad", "details": "", "extra_info": {}}},
        {},
    ],
    ids=["string-error", "no-node-errors", "empty"],
)
def test_other_refusals_are_prompt_rejected(body: dict[str, Any]) -> None:
    error = rejection(body)
    assert isinstance(error, PromptRejected)
    assert error.message
    assert error.location in (None, "prompt")
