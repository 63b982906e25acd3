"""rejection(): ComfyUI's 400 answer to POST /prompt, as our error, located at the first bad
node input."""

from __future__ import annotations

import re
from typing import Any

from app.core.errors import NoOutputs, PromptRejected


def rejection(body: dict[str, Any]) -> PromptRejected | NoOutputs:
    """Turn ComfyUI's 400 body into our error, located at the first bad node input."""
    error = body.get("error") or {}
    node_errors: dict[str, Any] = body.get("node_errors") or {}
    if isinstance(error, dict) and error.get("type") == "prompt_no_outputs":
        return NoOutputs(
            "the graph has no output node (such as SaveImage), so it would produce nothing",
            location="prompt",
        )
    message = (
        error.get("message", "ComfyUI refused the graph") if isinstance(error, dict) else str(error)
    )
    location = None
    problems = []
    for node_id, node_error in node_errors.items():
        class_type = node_error.get("class_type", "?")
        for e in node_error.get("errors", []):
            input_name = (e.get("extra_info") or {}).get("input_name")
            where = f"prompt.{node_id}.inputs.{input_name}" if input_name else f"prompt.{node_id}"
            location = location or where
            problems.append(f"{where} ({class_type}): {e.get('message')}: {e.get('details')}")
    if not location and isinstance(error, dict):
        # "Cannot execute because node X does not exist." names the node only in its details.
        named = re.search(r"Node ID '#([^']+)'", str(error.get("details", "")))
        location = f"prompt.{named.group(1)}.class_type" if named else "prompt"
    summary = f"{message}: " + "; ".join(problems[:5]) if problems else message
    return PromptRejected(summary, location=location, details={"node_errors": node_errors})
