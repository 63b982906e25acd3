"""Request and response models of the HTTP API, shared by the routes and the webhooks."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.core.options import JobOptions
from app.core.status import JobStatus

EXAMPLE_GRAPH: dict[str, Any] = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 16711680},
    },
    "2": {
        "class_type": "SaveImage",
        "inputs": {"images": ["1", 0], "filename_prefix": "example"},
    },
}


class Node(BaseModel):
    """One node of a ComfyUI API-format graph."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    class_type: str = Field(min_length=1, description="The node's type, e.g. `KSampler`")
    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description="Input values: literals, or links written as `[node_id, output_index]`",
    )
    meta: dict[str, Any] | None = Field(
        None, alias="_meta", description="Editor metadata such as `title`; passed through"
    )

    @field_validator("meta", mode="before")
    @classmethod
    def _meta_is_object(cls, value: Any) -> Any:
        if value is None:  # ComfyUI fails with a bare 500 on `"_meta": null`
            raise ValueError("must be an object when present")
        return value


class PromptRequest(JobOptions):
    """Run any ComfyUI graph and get its outputs back."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"prompt": EXAMPLE_GRAPH}]})

    prompt: dict[str, Node] = Field(
        min_length=1,
        description="The graph in ComfyUI's API format (`Save (API)` in ComfyUI's editor): "
        "`{node_id: {class_type, inputs}}`",
    )

    cache: bool = Field(
        False,
        description="Answer from the result cache (RESULT_CACHE_MAX_MB) when the same graph and "
        "`convert_output` (in any key order) were answered before, and keep this answer there; "
        "a hit runs no job. Never for a graph with a random seed (-1, `randomize`); not with "
        "webhooks, uploads or `Accept: text/event-stream`",
    )
    cache_external_inputs: bool = Field(
        False,
        description="With `cache`: also for a graph that reads URLs or files in ComfyUI's input "
        "folder, whose content may have changed since",
    )

    def graph(self) -> dict[str, dict[str, Any]]:
        graph = {}
        for node_id, node in self.prompt.items():
            dumped = node.model_dump(by_alias=True, exclude_unset=True)
            dumped.setdefault("inputs", {})  # ComfyUI expects the key even when empty
            graph[node_id] = dumped
        return graph


class Stats(BaseModel):
    """Where the time went, in milliseconds."""

    queue: float = Field(description="Milliseconds between submission and execution start")
    execution: float = Field(description="Milliseconds ComfyUI spent executing the graph")
    postprocess: float = Field(description="Milliseconds spent reading and encoding outputs")
    total: float = Field(description="Milliseconds from request to response")


class PromptResponse(BaseModel):
    """The outputs of a finished job."""

    id: str = Field(description="The request id")
    prompt: dict[str, Any] = Field(description="The graph as submitted to ComfyUI")
    images: list[str] = Field(
        description="Base64 contents of every output file (images, videos, audio, other "
        "files), ordered by node id, then by position; `images[i]` is `filenames[i]`"
    )
    filenames: list[str] = Field(description="The output file names, in the order of `images`")
    stats: Stats = Field(description="Where the time went, in milliseconds")
    warnings: list[str] | None = Field(
        None,
        exclude_if=lambda value: value is None,
        description="What the request asked for that the job did not honour (`convert_output` "
        "options Pillow has no equivalent for), each as `<field> (why)`; absent when none",
    )


class WorkflowResponse(PromptResponse):
    """The outputs of a workflow job, with the input it ran with."""

    input: dict[str, Any] = Field(description="The workflow input, defaults filled in")


class Accepted(BaseModel):
    """A job accepted for webhook delivery."""

    id: str = Field(description="The request id")
    prompt: dict[str, Any] = Field(description="The graph as submitted to ComfyUI")
    status: Literal["ok"] = Field(description="Always `ok`: the job is queued")


class Progress(BaseModel):
    value: int = Field(description="Steps done in the node running now")
    max: int = Field(description="Steps that node will take (0 when it reports none)")
    node: str | None = Field(description="The node running now")


class JobState(BaseModel):
    """What this gateway process knows of a job (not shared between gateway replicas)."""

    id: str = Field(description="The request id")
    status: JobStatus = Field(description="Where the job is")
    progress: Progress = Field(description="Progress of the node running now")
    queue_position: int | None = Field(
        None,
        description="Jobs ahead of this one while it is queued (in the gateway's queue, or in "
        "its instance's ComfyUI queue)",
    )
    instance: int | None = Field(
        None, description="The ComfyUI instance it was (last) submitted to, by index"
    )
    error: dict[str, Any] | None = Field(None, description="The error body, once it failed")
    result: dict[str, Any] | None = Field(
        None, description="The 200 body, once it succeeded (kept for a while)"
    )
    owner: str | None = Field(
        None,
        description="Admin keys only: the key whose job it is (its name; `key-<hash>` for an "
        "unnamed key)",
    )


class InterruptRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"id": "job-1"}]})

    id: str = Field(description="The request id of a queued or running job")
    owner: str | None = Field(
        None,
        description="Admin keys: the key whose job it is (its name), when several keys have "
        "used the id; other keys' jobs are out of reach of other keys",
    )


class InterruptResponse(BaseModel):
    id: str = Field(description="The request id")
    interrupted: Literal[True] = Field(description="Always true: the job was cancelled")


class InstanceInfo(BaseModel):
    index: int = Field(description="The instance's number, from 0")
    state: Literal["starting", "ready", "recycling", "restarting", "down", "stopped"] = Field(
        description="`ready` takes jobs; `recycling` restarts on purpose after its jobs; "
        "`restarting` after it exited; `down`: exited, and ALWAYS_RESTART_COMFYUI is off"
    )
    gpu: str | None = Field(description="Its GPU (CUDA_VISIBLE_DEVICES), from COMFYUI_GPUS")
    port: int = Field(description="The port its ComfyUI listens on")
    jobs: list[str] = Field(description="Request ids of the jobs on it now")
    jobs_run: int = Field(description="Jobs it ran (or began to run) since the gateway started")
    restarts: int = Field(description="Times it was started again (after a crash or a recycle)")
    comfyui_version: str | None = Field(description="Its ComfyUI's version")


class CustomNode(BaseModel):
    """A custom node the manifest installed."""

    name: str = Field(description="Its folder in COMFY_HOME/custom_nodes")
    url: str = Field(description="The repository it was cloned from")
    ref: str | None = Field(description="The ref the manifest pins (null: its default branch)")
    commit: str = Field(description="The commit checked out")


class HealthResponse(BaseModel):
    status: Literal["healthy"] = Field(description="Start-up has completed")
    version: str = Field(description="The gateway's version")
    comfyui_version: str | None = Field(
        description="The version of the ComfyUI the gateway talks to (null until it answers)"
    )
    instances: list[InstanceInfo] = Field(description="Each ComfyUI instance of the pool")
    custom_nodes: list[CustomNode] = Field(
        [], description="The custom nodes the manifest (MANIFEST) installed, with their commits"
    )


class ReadyResponse(BaseModel):
    status: Literal["ready", "not ready"] = Field(description="Whether to send traffic here")
    reason: str | None = Field(None, description="Why the gateway is not ready")
    queue_depth: int = Field(description="Jobs running or waiting in ComfyUI")


class ErrorResponse(BaseModel):
    """The shape of every error answer."""

    error: str = Field(description="What went wrong, for a person")
    code: str = Field(description="A machine-readable code, e.g. `prompt_invalid`")
    location: str | None = Field(
        None, description="Where in the request, e.g. `prompt.3.inputs.seed`"
    )
    details: dict[str, Any] | None = Field(None, description="Structured detail, e.g. node_errors")
