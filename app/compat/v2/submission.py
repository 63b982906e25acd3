"""A v2 job submission, checked in comfy-api-proxy's order, its asset references resolved.

Each check returns the proxy's error (status, code, message) or None. A `core/ASSET` reference
anywhere in the workflow (`{"__type": "core/ASSET", "info": {"id", "hash"?}}`) becomes what a
loader input takes: an uploaded asset's name in ComfyUI's input folder, or, for the output of an
earlier job, that file's content as base64, which the gateway hands to ComfyUI in the job's own
input subfolder (the proxy passes the output's file name, which ComfyUI then looks for in its
input folder and refuses).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import SecretStr

from app.compat.v2.assets import AssetStore
from app.core.keys import Caller
from app.core.numbers import whole_number
from app.core.options import JobOptions, partner_key_problem
from app.core.outcome import ResultFile
from app.core.priority import PRIORITY_MAX, PRIORITY_MIN

MAX_METADATA_BYTES = 1024
# The proxy takes -1e6..1e6 and ignores it; here it orders the queue, in the gateway's range.
PRIORITY_RANGE = (PRIORITY_MIN, PRIORITY_MAX)

Problem = tuple[int, str, str]  # status, code, message
OutputLookup = Callable[[str], ResultFile | None]  # output id -> the file


def reserved(body: dict[str, Any]) -> Problem | None:
    if body.get("webhook_url") is not None or body.get("inputs") is not None:
        return 422, "invalid_workflow", "'webhook_url' and 'inputs' are reserved and not accepted."
    return None


def workflow_problem(workflow: Any) -> Problem | None:
    if not isinstance(workflow, dict):
        return 422, "invalid_workflow", "Missing 'workflow' (API-format graph)."
    if isinstance(workflow.get("nodes"), list) and "links" in workflow:
        message = "This is a UI-export graph. Export the workflow in API format instead."
        return 422, "workflow_format_ui", message
    return None


def extras_problem(body: dict[str, Any]) -> Problem | None:
    """`metadata` (a string of at most 1 KiB) and `priority` (an integer: higher runs first)."""
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, str):
            return 422, "invalid_request", "'metadata' must be a string (opaque label)."
        if len(metadata.encode()) > MAX_METADATA_BYTES:
            return 422, "invalid_request", f"'metadata' exceeds {MAX_METADATA_BYTES} UTF-8 bytes."
    priority = body.get("priority")
    if priority is not None:
        if isinstance(priority, bool) or not isinstance(priority, int):
            return 422, "invalid_request", "'priority' must be an integer."
        low, high = PRIORITY_RANGE
        if not low <= priority <= high:
            return 422, "invalid_request", f"'priority' must be between {low} and {high}."
    return None


def extra_data_problem(body: dict[str, Any]) -> Problem | None:
    """`extra_data` is closed: only `api_key_comfy_org`, a string."""
    extra = body.get("extra_data")
    if extra is None:
        return None
    if not isinstance(extra, dict) or set(extra) - {"api_key_comfy_org"}:
        return 400, "invalid_request", "'extra_data' accepts only the 'api_key_comfy_org' field."
    key = extra.get("api_key_comfy_org")
    if key is not None and not isinstance(key, str):
        return 400, "invalid_request", "'extra_data.api_key_comfy_org' must be a string."
    if key and (problem := partner_key_problem(key)):
        return 400, "invalid_request", f"'extra_data.api_key_comfy_org' {problem}."
    return None


def job_options(body: dict[str, Any]) -> JobOptions:
    """The gateway's options of a v2 submission: its priority, and its partner-node key if it
    gives one."""
    key = (body.get("extra_data") or {}).get("api_key_comfy_org")
    priority = body.get("priority") or 0
    if key:
        return JobOptions(priority=priority, api_key_comfy_org=SecretStr(key))
    return JobOptions(priority=priority)


def is_reference(value: Any) -> bool:
    return isinstance(value, dict) and value.get("__type") == "core/ASSET"


def reference_ids(node: Any) -> list[str]:
    """The ids every core/ASSET reference in the workflow names."""
    if is_reference(node):
        info = node.get("info")
        asset_id = info.get("id") if isinstance(info, dict) else None
        return [asset_id] if isinstance(asset_id, str) else []
    if isinstance(node, dict):
        node = list(node.values())
    if isinstance(node, list):
        return [found for value in node for found in reference_ids(value)]
    return []


def resolve(
    node: Any, assets: AssetStore, caller: Caller, output: OutputLookup, missing: list[str]
) -> Any:
    """The workflow with every core/ASSET reference replaced; unresolvable ids (and other API
    keys' assets) go to missing."""
    if is_reference(node):
        info = node.get("info")
        if not isinstance(info, dict):
            missing.append("<malformed core/ASSET: missing info>")
            return node
        resolved = _reference(info, assets, caller, output)
        if resolved is None:
            missing.append(str(info.get("id", "<no id>")))
            return node
        return resolved
    if isinstance(node, dict):
        return {k: resolve(v, assets, caller, output, missing) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(value, assets, caller, output, missing) for value in node]
    return node


def _reference(
    info: dict[str, Any], assets: AssetStore, caller: Caller, output: OutputLookup
) -> str | None:
    asset_id = info.get("id")
    asset = assets.get(asset_id, caller) if isinstance(asset_id, str) else None
    if asset is None and isinstance(asset_id, str) and (found := output(asset_id)) is not None:
        # Its base64, as the input pipeline takes it (the graph carries it): the route has held
        # the file to INPUT_MAX_MB before, so no output larger than an input is encoded whole.
        return found.content
    if asset is None and isinstance(info.get("hash"), str):
        asset = assets.by_hash(info["hash"], caller)  # as the proxy: a hash also finds it
    return asset.comfy_name if asset is not None else None


def output_id_parts(output_id: str) -> tuple[str, int] | None:
    """(job id, file index) of an output id `<job id>.<n>`."""
    job_id, dot, index = output_id.rpartition(".")
    number = whole_number(index) if dot else None
    return None if number is None else (job_id, number)
