"""The CLI's --input parsing: JSON where it parses, text otherwise, clear errors."""

from __future__ import annotations

import pytest

from app.tools.cli import parse_inputs


def test_values_are_json_when_they_parse() -> None:
    parsed = parse_inputs(["prompt=a cat", "steps=20", "cfg=7.5", "hires=true", "loras=[1, 2]"])
    assert parsed == {"prompt": "a cat", "steps": 20, "cfg": 7.5, "hires": True, "loras": [1, 2]}


def test_value_may_contain_equals_signs() -> None:
    assert parse_inputs(["prompt=a=b"]) == {"prompt": "a=b"}


@pytest.mark.parametrize("bad", ["no-equals", "=value"])
def test_malformed_pair_is_refused(bad: str) -> None:
    with pytest.raises(SystemExit, match="key=value"):
        parse_inputs([bad])
