"""Registry: finds the workflow modules in WORKFLOW_DIR, checks their contract, and readies them.

Every `*.py` under the folder (names starting with `_` or `.` are skipped) is a workflow:
`workflows/sd15/txt2img.py` becomes `POST /workflows/sd15/txt2img`. A module must define
`RequestSchema` (a pydantic model) and `generate_workflow(input) -> graph`; it may define
`summary` and `description` (else its docstring gives them). A module that fails to import or
breaks the contract stops start-up with its path and the reason.

Loading happens when the app is created (no ComfyUI needed): import, check the contract, build
the graph of the example input. `activate` happens at start-up, once ComfyUI answers: the
schemas get the install's enums (see `app.workflow_types`), and each workflow's example graph is
checked against `/object_info`, which decides whether it is available.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from app.comfy.catalog import Catalog
from app.core.errors import InvalidRequest, WorkflowFailed, WorkflowUnavailable
from app.core.settings import SettingsError
from app.registry.availability import check_graph
from app.registry.fields import Checkpoint, ComfyChoice
from app.registry.schema import (
    ExampleError,
    Narrower,
    choice_of,
    choices,
    example_input,
    schema_prefix,
    stand_in,
)

log = logging.getLogger(__name__)

Graph = dict[str, dict[str, Any]]
SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# The choice whose fields default to the gateway's default checkpoint.
DEFAULT_CHECKPOINT = next(m for m in get_args(Checkpoint) if isinstance(m, ComfyChoice))


class WorkflowLoadError(SettingsError):
    """A workflow module cannot be loaded or breaks its contract; the message names its path."""


@dataclass
class Workflow:
    """One workflow module and, once activated, its schema and availability on this ComfyUI."""

    name: str  # "sd15/txt2img"
    path: Path
    file: str  # the path people see in errors: "workflows/sd15/txt2img.py"
    schema: type[BaseModel]
    generate: Callable[[Any], Any]
    summary: str
    description: str
    input_model: type[BaseModel] | None = None  # the schema with this install's enums
    example: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] | None = None  # None until checked; [] when available
    object_info: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def route(self) -> str:
        return f"/workflows/{self.name}"

    @property
    def available(self) -> bool:
        return self.reasons == []

    def graph(self, data: BaseModel) -> Graph:
        """Run generate_workflow: its ValueError is the client's 400, anything else a 500."""
        try:
            graph: Graph = self.generate(data)
        except ValueError as e:
            raise InvalidRequest(str(e) or "invalid input", location="input") from e
        except Exception as e:
            log.exception("workflow %s: generate_workflow raised", self.path)
            raise WorkflowFailed(
                f"the workflow module {self.file} failed: {type(e).__name__}: {e}",
                details={"module": self.file, "workflow": self.name},
            ) from e
        problem = graph_problem(graph)
        if problem:
            log.error("workflow %s: generate_workflow returned %s", self.path, problem)
            raise WorkflowFailed(
                f"the workflow module {self.file} returned {problem}",
                details={"module": self.file, "workflow": self.name},
            )
        # Unavailable with its defaults, but this input may name models that are installed.
        if self.reasons and (reasons := check_graph(graph, self.object_info)):
            raise WorkflowUnavailable(
                f"workflow {self.name} cannot run on this server: {'; '.join(reasons)}",
                details={"workflow": self.name, "reasons": reasons},
            )
        return graph

    def activate(
        self, catalog: Catalog, default_checkpoint: str | None, *, model_urls: bool = False
    ) -> None:
        """Narrow the schema to this install and check the example graph against it.

        `model_urls`: model fields take a URL too, downloaded before the job runs.
        """
        self.reasons = None
        defaults = {DEFAULT_CHECKPOINT: default_checkpoint} if default_checkpoint else {}
        values = partial(choices, catalog)
        narrower = Narrower(schema_prefix(self.name), values, defaults, urls=model_urls)
        self.input_model = narrower.model(self.schema, name="Input")
        self.object_info = catalog.object_info
        self.example = example_input(self.input_model, values)
        graph = self.graph(self.input_model.model_validate(self.example))
        # A required choice with nothing to choose from got a stand-in value: say why instead.
        empty = [c for c in required_choices(self.input_model) if not choices(catalog, c)]
        reasons = [f"no {c.kind} is installed ({c.source} is empty)" for c in empty]
        found = check_graph(graph, catalog.object_info)
        found = [r for r in found if not any(stand_in(c) in r for c in empty)]
        self.reasons = list(dict.fromkeys(reasons + found))


def graph_problem(graph: Any) -> str | None:
    """Why this is not an API-format graph, or None."""
    if not isinstance(graph, dict) or not graph:
        return f"{type(graph).__name__}, not a graph (a non-empty dict of nodes)"
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            return f"a graph whose node {node_id!r} has no class_type"
        if not isinstance(node.get("inputs", {}), dict):
            return f"a graph whose node {node_id!r} has inputs that are not a dict"
    return None


def required_choices(model: type[BaseModel]) -> list[ComfyChoice]:
    """The choices of a model's required top-level fields."""
    fields = model.model_fields.values()
    return [choice for info in fields if info.is_required() and (choice := choice_of(info))]


def discover(directory: Path) -> list[tuple[str, Path]]:
    """(name, path) of every workflow module under directory, sorted by name."""
    if not directory.is_dir():
        raise WorkflowLoadError(f"WORKFLOW_DIR={str(directory)!r} is not a folder")
    found: dict[str, Path] = {}
    for path in sorted(directory.rglob("*.py")):
        parts = path.relative_to(directory).with_suffix("").parts
        if any(p.startswith(("_", ".")) for p in parts):
            continue
        for part in parts:
            if not SEGMENT.fullmatch(part):
                raise WorkflowLoadError(
                    f"{path}: {part!r} cannot be part of a route "
                    "(use letters, digits, '.', '_' and '-'; start with a letter or digit)"
                )
        name = "/".join(parts)
        # Routes that differ only by case would be one route to people and to some filesystems.
        clash = next((p for n, p in found.items() if n.lower() == name.lower()), None)
        if clash is not None:
            raise WorkflowLoadError(
                f"{path}: maps to the same route as {clash} (/workflows/{name}); rename one"
            )
        found[name] = path
    theirs = [p for p in sorted(directory.rglob("*")) if p.suffix in (".ts", ".js")]
    for path in theirs:  # comfyui-api's workflow modules: named, never silently skipped
        log.warning(
            "%s: a comfyui-api workflow (TypeScript/JavaScript) is not loaded here: write it as a "
            "Python module beside it (RequestSchema, generate_workflow; docs/workflows.md)",
            path,
        )
    return sorted(found.items())


def import_module(name: str, path: Path) -> ModuleType:
    # Registered in sys.modules so pydantic can resolve the module's postponed annotations.
    module_name = "comfy_workflows." + re.sub(r"\W", "_", name.replace("/", "."))
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise WorkflowLoadError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(module_name, None)
        raise WorkflowLoadError(f"{path}: import failed: {type(e).__name__}: {e}") from e
    return module


def load_workflow(name: str, path: Path, file: str | None = None) -> Workflow:
    """Import one module and check its contract; raise WorkflowLoadError naming the path.

    `file` is how errors in answers name the module (default: its file name).
    """
    module = import_module(name, path)
    schema = getattr(module, "RequestSchema", None)
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise WorkflowLoadError(f"{path}: defines no RequestSchema (a pydantic BaseModel class)")
    generate = getattr(module, "generate_workflow", None)
    if not callable(generate):
        raise WorkflowLoadError(f"{path}: defines no generate_workflow(input) function")
    try:
        inspect.signature(generate).bind(None)
    except TypeError:
        raise WorkflowLoadError(
            f"{path}: generate_workflow must take one argument, the RequestSchema instance"
        ) from None
    except ValueError:
        pass  # no signature to inspect (a builtin): trust it
    doc = inspect.getdoc(module) or ""
    summary = getattr(module, "summary", None) or doc.split("\n\n")[0].replace("\n", " ")
    description = getattr(module, "description", None) or doc.partition("\n\n")[2]
    if not isinstance(summary, str) or not isinstance(description, str):
        raise WorkflowLoadError(f"{path}: summary and description must be strings")
    file = file or path.name
    workflow = Workflow(name, path, file, schema, generate, summary or name, description)
    # The example must validate and produce a graph: a module that cannot is broken now,
    # not at its first request. Choices ComfyUI will fill in get a stand-in value here.
    try:
        example = example_input(schema, lambda choice: None)
        data = schema.model_validate(example)
    except ExampleError as e:
        raise WorkflowLoadError(f"{path}: {e}") from e
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in e.errors())
        raise WorkflowLoadError(f"{path}: its example input is invalid: {problems}") from e
    try:
        graph = generate(data)
    except Exception as e:
        log.exception("%s: generate_workflow raised on the example input", path)
        raise WorkflowLoadError(
            f"{path}: generate_workflow fails on the example input {example}: "
            f"{type(e).__name__}: {e}"
        ) from e
    if problem := graph_problem(graph):
        raise WorkflowLoadError(f"{path}: generate_workflow returns {problem}")
    return workflow


class Registry:
    """Every workflow of one WORKFLOW_DIR."""

    def __init__(self, workflows: list[Workflow]) -> None:
        self.workflows = workflows

    @classmethod
    def load(cls, directory: Path) -> Registry:
        """Import and check every module; the first broken one raises WorkflowLoadError."""
        workflows = [
            load_workflow(name, path, str(path.relative_to(directory.parent)))
            for name, path in discover(directory)
        ]
        log.info("loaded %d workflow(s) from %s", len(workflows), directory)
        return cls(workflows)

    def activate(
        self, catalog: Catalog, default_checkpoint: str | None, *, model_urls: bool = False
    ) -> None:
        """Ready every workflow for this ComfyUI (again, when its models changed); log which are
        available and why not. `model_urls`: model fields take a URL too."""
        installed = catalog.models.get("checkpoints") or []
        checkpoint = default_checkpoint or (installed[0] if installed else None)
        for workflow in self.workflows:
            before = workflow.reasons  # None the first time: every reason is news then
            try:
                workflow.activate(catalog, checkpoint, model_urls=model_urls)
            except (ExampleError, ValidationError, InvalidRequest, WorkflowFailed) as e:
                # Its example no longer validates against this install's choices.
                workflow.reasons = [f"its example input does not work here: {e}"]
            except Exception as e:  # one odd module must not keep the others from starting
                log.exception("workflow %s cannot be readied for this ComfyUI", workflow.path)
                workflow.reasons = [f"cannot be readied for this ComfyUI: {type(e).__name__}: {e}"]
            workflow.input_model = workflow.input_model or workflow.schema
            if workflow.reasons and workflow.reasons != before:
                reasons = "; ".join(workflow.reasons)
                log.warning("workflow %s is unavailable: %s", workflow.name, reasons)
        available = sum(w.available for w in self.workflows)
        log.info("%d of %d workflow(s) available", available, len(self.workflows))
