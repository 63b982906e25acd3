"""What ComfyUI's websocket events mean for one prompt: its waiter, its progress, its errors.

The PromptTracker (app.comfy.tracker) reads the stream and applies these; they hold no
connection and are tested on recorded events.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.comfy.previews import PreviewFrame
from app.core.errors import ComfyUnavailable, ExecutionFailed, GatewayError, Interrupted

Outputs = dict[str, dict[str, Any]]  # node id -> what the node reported in `executed`

EventListener = Callable[[str, dict[str, Any]], None]  # (event type, event data)
PreviewListener = Callable[[PreviewFrame, str | None], None]  # (preview, its node id or None)

LostError = Callable[[], GatewayError]  # the error of a prompt ComfyUI no longer knows


@dataclass
class Progress:
    value: int = 0
    max: int = 0
    node: str | None = None


@dataclass
class PromptWaiter:
    """What the gateway knows of one prompt while it runs."""

    prompt_id: str
    generation: int
    done: asyncio.Future[Outputs]
    outputs: Outputs = field(default_factory=dict)
    progress: Progress = field(default_factory=Progress)
    submitted: bool = False
    started_at: float | None = None  # monotonic time of execution_start
    succeeded: bool = False  # execution_success seen: it has left ComfyUI's queue
    on_event: EventListener | None = None  # told of each of this prompt's events
    on_preview: PreviewListener | None = None  # told of each of its latent previews

    @property
    def outstanding(self) -> bool:
        """Submitted, not settled, and (as far as events tell) still in ComfyUI's queue."""
        return self.submitted and not self.succeeded and not self.done.done()

    def apply(self, kind: str, data: dict[str, Any]) -> Ending | None:
        """Follow one of this prompt's events; an Ending when it ends the prompt.

        The job (`on_event`) hears of each event that says something new: newer ComfyUI sends
        a step both as `progress` and in `progress_state` (a node may report only there), so a
        step reaches it once, as `progress`.
        """
        ending: Ending | None = None
        if kind == "execution_start":
            self.started_at = time.monotonic()
        elif kind == "executed" and data.get("node") is not None:
            self.outputs[str(data["node"])] = data.get("output") or {}
        elif kind in ("progress", "progress_state"):
            if kind == "progress":
                step = Progress(count(data.get("value")), count(data.get("max")), data.get("node"))
            else:
                step = running_node(data) or self.progress
            if step == self.progress:
                return None
            self.progress = step
            kind, data = "progress", {"prompt_id": self.prompt_id, **dataclasses.asdict(step)}
        elif kind == "execution_success":
            self.succeeded = True
        elif kind == "executing":
            if data.get("node") is None:
                ending = Ending()
            else:
                self.progress = Progress(node=str(data["node"]))
        elif kind == "execution_error":
            ending = Ending(execution_error(data))
        elif kind == "execution_interrupted":
            ending = Ending(interrupted(data))
        if self.on_event is not None:
            self.on_event(kind, data)
        return ending

    def apply_history(self, entry: dict[str, Any]) -> Ending:
        """How a finished prompt ended, from its history entry (for events that were missed)."""
        status = entry.get("status") or {}
        for kind, data in status.get("messages", []):
            if kind in ("execution_error", "execution_interrupted"):
                return self.apply(kind, {**data, "prompt_id": self.prompt_id}) or Ending()
        for node_id, output in (entry.get("outputs") or {}).items():
            self.outputs.setdefault(str(node_id), output)
        return Ending()


@dataclass(frozen=True)
class Ending:
    """A prompt is over: with its outputs (no error), or with this error."""

    error: GatewayError | None = None


def execution_error(data: dict[str, Any]) -> ExecutionFailed:
    """ComfyUI's execution_error, minus the tensor reprs in current_inputs/current_outputs."""
    node_id = str(data.get("node_id"))
    class_type = data.get("node_type", "?")
    exc_type = data.get("exception_type", "Exception")
    message = str(data.get("exception_message", "")).strip()
    return ExecutionFailed(
        f"node {node_id} ({class_type}) failed: {exc_type}: {message}",
        location=f"prompt.{node_id}",
        details={
            "node_id": node_id,
            "class_type": class_type,
            "exception_type": exc_type,
            "exception_message": message,
        },
    )


def running_node(data: dict[str, Any]) -> Progress | None:
    """The step progress in a `progress_state` event: its running node that counts steps."""
    nodes = data.get("nodes")
    for node_id, state in nodes.items() if isinstance(nodes, dict) else ():
        if not isinstance(state, dict) or state.get("state") != "running":
            continue
        value, most = count(state.get("value")), count(state.get("max"))
        if most > 1:
            node = state.get("display_node_id") or node_id
            return Progress(value, most, str(node))
    return None


def count(value: Any) -> int:
    """A step count from an event: a whole number, or 0 (ComfyUI's JSON may carry NaN)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, float) and math.isfinite(value) else 0


def lost_by_comfyui() -> GatewayError:
    return ComfyUnavailable(
        "ComfyUI lost the job (it was restarted or its queue cleared)", instance_lost=True
    )


def removed_behind_gateway() -> GatewayError:
    return Interrupted(
        "the job was removed from ComfyUI's queue outside the gateway (the queue was cleared "
        "or the prompt deleted in ComfyUI itself)"
    )


def interrupted(data: dict[str, Any]) -> Interrupted:
    node = data.get("node_id")
    where = f" at node {node} ({data.get('node_type')})" if node else ""
    return Interrupted(f"the job was interrupted{where}")
