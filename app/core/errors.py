"""One exception tree for everything the gateway answers with an error.

    GatewayError                    carries status, code, message, location, details, headers
    ├── InvalidRequest          400 the body breaks the schema or names something impossible
    │   ├── PromptRejected      400 ComfyUI refused the graph (its node_errors in details)
    │   ├── InputError          400 an input file cannot be used (bad URL, base64, kind...)
    │   └── NoOutputs           400 the graph has no output node
    ├── Unauthorized            401 no API key, or an unknown one (API_KEYS); WWW-Authenticate
    ├── Forbidden               403 a ComfyUI endpoint the passthrough does not open by default, or
    │                               what a key's grants (KEY_LIMITS `models`) do not allow
    ├── NotFound                404 unknown route, or an id this gateway does not know
    ├── MethodNotAllowed        405 the route exists, the method does not
    ├── RequestTimeout          408 the body did not arrive in time (PASSTHROUGH_BODY_TIMEOUT_S)
    ├── Conflict                409 the request clashes with a job (duplicate id)
    │   └── Interrupted         409 the job was interrupted on request
    ├── PayloadTooLarge         413 body over MAX_BODY_SIZE_MB
    ├── QueueFull               429 MAX_QUEUE_DEPTH reached (Retry-After)
    ├── RateLimited             429 the key's requests_per_minute (KEY_LIMITS) spent (Retry-After)
    ├── TooManyJobs             429 the key's max_jobs (KEY_LIMITS) queued or running (Retry-After)
    ├── TooManyDownloads        429 the key's max_downloads (KEY_LIMITS) in flight (Retry-After)
    ├── WorkflowFailed          500 a workflow module's generate_workflow has a bug
    ├── ExecutionFailed         502 a node raised while ComfyUI executed the graph
    ├── UploadFailed            502 an output could not be stored in S3 or Azure, or PUT
    ├── DownloadFailed          502 a model could not be downloaded, or its bytes were not the ones
    │                               named (size, sha256): nothing was kept
    ├── OutputsUnavailable      502 in a fleet, the gateway that ran the job no longer has its
    │                               outputs (it stopped, or its history let them go)
    ├── ComfyFailed             502 ComfyUI, though up, failed on the request (its HTTP 500)
    ├── ComfyUnavailable        503 ComfyUI is down, restarting or unreachable (Retry-After);
    │                               `instance_lost` when the instance running the job died
    ├── WorkflowUnavailable     503 the workflow needs nodes or models this ComfyUI lacks
    ├── PromptTimeout           504 the job ran past PROMPT_TIMEOUT_S
    └── InsufficientStorage     507 a disk filled up while the request's files were written, or no
                                    room for a model: MODEL_CACHE_MAX_GB or the disk is full of
                                    models in use or put there by hand

Every class renders as `{"error", "code", "location"?, "details"?}`; app.edge.errors does that
for HTTP, and webhooks carry the same body.
"""

from __future__ import annotations

from typing import Any, ClassVar


class GatewayError(Exception):
    """Base class: an error with an HTTP status and a machine code."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        location: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message, "code": self.code}
        if self.location is not None:
            body["location"] = self.location
        if self.details is not None:
            body["details"] = self.details
        return body


class InvalidRequest(GatewayError):
    """The request is invalid; `location` says where."""

    status = 400
    code = "invalid_request"


class PromptRejected(InvalidRequest):
    """ComfyUI's validation refused the graph."""

    code = "prompt_invalid"


class InputError(InvalidRequest):
    """An input file that cannot be used; `location` names the node input."""

    code = "invalid_input"


class NoOutputs(InvalidRequest):
    """The graph has no output node, so running it would produce nothing."""

    code = "no_outputs"


class Unauthorized(GatewayError):
    """The request carries no API key, or one this gateway does not accept."""

    status = 401
    code = "unauthorized"

    def __init__(self, message: str, *, challenge: str = "Bearer", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("WWW-Authenticate", challenge)


class Forbidden(GatewayError):
    """The request is understood but not allowed here; the message names what would allow it."""

    status = 403
    code = "forbidden"


class NotFound(GatewayError):
    """No such route or id."""

    status = 404
    code = "not_found"


class MethodNotAllowed(GatewayError):
    """The route does not take this method."""

    status = 405
    code = "method_not_allowed"


class Conflict(GatewayError):
    """The request clashes with a job already known."""

    status = 409
    code = "conflict"


class Interrupted(Conflict):
    """The job was interrupted through POST /interrupt."""

    code = "interrupted"


class RequestTimeout(GatewayError):
    """The client took longer to send its request body than the gateway waits."""

    status = 408
    code = "request_timeout"


class PayloadTooLarge(GatewayError):
    """The body is larger than MAX_BODY_SIZE_MB."""

    status = 413
    code = "payload_too_large"


class QueueFull(GatewayError):
    """ComfyUI's queue is at MAX_QUEUE_DEPTH."""

    status = 429
    code = "queue_full"


class RateLimited(GatewayError):
    """The API key made more requests than its KEY_LIMITS requests_per_minute allow."""

    status = 429
    code = "rate_limited"


class TooManyJobs(GatewayError):
    """The API key has as many jobs queued or running as its KEY_LIMITS max_jobs allow."""

    status = 429
    code = "too_many_jobs"


class TooManyDownloads(GatewayError):
    """The API key has as many model downloads in flight as its KEY_LIMITS max_downloads allow."""

    status = 429
    code = "too_many_downloads"


class WorkflowFailed(GatewayError):
    """A workflow module raised (other than ValueError) or returned something not a graph."""

    status = 500
    code = "workflow_failed"


class ExecutionFailed(GatewayError):
    """A node raised while ComfyUI executed the graph."""

    status = 502
    code = "execution_failed"


class UploadFailed(GatewayError):
    """An output could not be stored where the request asked."""

    status = 502
    code = "upload_failed"


class DownloadFailed(GatewayError):
    """A model download failed at the remote end, or delivered other bytes than named."""

    status = 502
    code = "download_failed"


class OutputsUnavailable(GatewayError):
    """In a fleet, a job's outputs cannot be fetched from the gateway that ran it: it stopped,
    or it no longer keeps them (its job history's bounds), or the fleet's secret differs."""

    status = 502
    code = "outputs_unavailable"


class ComfyFailed(GatewayError):
    """ComfyUI answered, but with a server error of its own (a bug it hit on this graph)."""

    status = 502
    code = "comfy_error"


class ComfyUnavailable(GatewayError):
    """ComfyUI is not running, restarting, or not answering.

    `instance_lost`: the instance running the job died or lost it, so the job may run again on
    another instance (JOB_RETRIES) before this becomes its outcome.
    """

    status = 503
    code = "comfy_unavailable"

    def __init__(
        self, message: str, *, retry_after_s: int = 5, instance_lost: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.instance_lost = instance_lost
        self.headers.setdefault("Retry-After", str(retry_after_s))


class WorkflowUnavailable(GatewayError):
    """The workflow's graph needs node classes or model files this ComfyUI does not have."""

    status = 503
    code = "workflow_unavailable"


class PromptTimeout(GatewayError):
    """The job ran past PROMPT_TIMEOUT_S and was interrupted."""

    status = 504
    code = "timeout"

    @classmethod
    def after(cls, timeout_s: float | None) -> PromptTimeout:
        """The error of a job that ran past its deadline (which only a PROMPT_TIMEOUT_S sets)."""
        return cls(f"the job ran past PROMPT_TIMEOUT_S ({timeout_s:g}s) and was interrupted")


class InsufficientStorage(GatewayError):
    """A disk filled up (ENOSPC) while a request's files or a job's outputs were written; or a
    model does not fit: the cache's cap or the disk, with nothing left that may be evicted."""

    status = 507
    code = "insufficient_storage"


def error_from_body(status: int, body: dict[str, Any]) -> GatewayError:
    """The error a job ended with elsewhere (another gateway of the fleet), from its body and
    status: an instance of the class of that code, so it answers exactly as it did there."""
    classes = {cls.code: cls for cls in _subclasses(GatewayError) if cls.status == status}
    cls = classes.get(str(body.get("code")), GatewayError)
    error = cls.__new__(cls)
    GatewayError.__init__(
        error,
        str(body.get("error", "the job failed")),
        location=body.get("location"),
        details=body.get("details"),
    )
    return error


def _subclasses(cls: type[GatewayError]) -> list[type[GatewayError]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found
