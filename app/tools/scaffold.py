"""`comfy-gateway-cli scaffold graph.json workflows/x/y.py`: a workflow module from a ComfyUI
graph.

Every literal input of every node becomes a typed, described field of `RequestSchema`, with the
graph's value as its default; type, range and choices come from ComfyUI's `/object_info`
(from `--comfy-url`, default the gateway's ComfyUI, or a saved copy given by `--object-info`).
Model, sampler and scheduler inputs get the `app.workflow_types` types, so the endpoint lists
what the running ComfyUI has. Links stay as they are. The module is checked the way the
registry checks it before the command returns; then rename fields and drop the ones callers
should not set.
"""

from __future__ import annotations

import argparse
import functools
import json
import keyword
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, get_args

import httpx
from pydantic import BaseModel

from app import workflow_types
from app.comfy.catalog import Catalog, InputSpec, node_inputs
from app.comfy.graph import is_link, load_graph, node_order
from app.comfy.model_inputs import model_folder
from app.core.settings import SettingsError, load_settings
from app.registry.fields import ComfyChoice
from app.registry.load import WorkflowLoadError, load_workflow
from app.registry.schema import choices

# The app.workflow_types type of a model folder's files (which inputs name a model file, and of
# which folder, is app.comfy.model_inputs's table), and of ComfyUI's sampler choices.
BY_FOLDER = {
    "checkpoints": "Checkpoint",
    "loras": "Lora",
    "vae": "Vae",
    "diffusion_models": "DiffusionModel",
    "text_encoders": "TextEncoder",
    "upscale_models": "UpscaleModel",
}
BY_INPUT = {"sampler_name": "Sampler", "scheduler": "Scheduler"}
PLAIN = {"INT": "int", "FLOAT": "float", "STRING": "str", "BOOLEAN": "bool"}


class SchemaField:
    """One literal input of the graph, as a field of RequestSchema."""

    def __init__(self, node_id: str, class_type: str, input: str, value: Any) -> None:
        self.node_id, self.class_type, self.input, self.value = node_id, class_type, input, value
        self.name = input
        self.type = type(value).__name__ if isinstance(value, int | float | str | bool) else "Any"
        self.limits: dict[str, Any] = {}
        self.help = ""

    def describe(self, spec: InputSpec | None, catalog: Catalog) -> None:
        """Type, range and help from the node's input spec."""
        if spec is None:
            self.help = "not in ComfyUI's /object_info: typed from the graph's value"
            return
        self.help = str(spec.options.get("tooltip") or "")
        folder = model_folder(self.class_type, self.input)
        typed = BY_FOLDER.get(folder) if folder else BY_INPUT.get(self.input)
        if spec.uploads:
            self.type = "InputImage"
        elif typed in ("Sampler", "Scheduler"):
            ours = choices(catalog, _choice(typed))
            self.type = typed if ours and spec.choices == ours else self.type
        elif typed:
            self.type = typed
        elif spec.choices is not None and self.value in spec.choices:
            self.type = f"Literal[{', '.join(py(c) for c in spec.choices)}]"
        elif spec.type in PLAIN:
            self.type = PLAIN[spec.type]
            for option, bound in (("min", "ge"), ("max", "le")):
                if isinstance(spec.options.get(option), int | float):
                    self.limits[bound] = spec.options[option]

    def source(self) -> str:
        where = f"{self.class_type}.{self.input} (node {self.node_id})"
        description = f"{where}: {self.help}" if self.help else where
        args = [py(self.value), *(f"{k}={py(v)}" for k, v in self.limits.items())]
        args.append(f"description={py(description)}")
        line = f"    {self.name}: {self.type} = Field({', '.join(args)})"
        if len(line) <= 100:
            return line
        # One argument a line, the description split into adjacent literals that fit.
        chunks = textwrap.wrap(description, 76, drop_whitespace=False, break_on_hyphens=False)
        args[-1] = "description=" + "\n        ".join(py(chunk) for chunk in chunks)
        inner = "".join(f"        {arg},\n" for arg in args)
        return f"    {self.name}: {self.type} = Field(\n{inner}    )"


def py(value: Any) -> str:
    """A Python literal for a JSON value, strings in double quotes as ruff writes them."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return f"[{', '.join(py(v) for v in value)}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py(k)}: {py(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _choice(alias: str) -> ComfyChoice:
    return next(m for m in get_args(getattr(workflow_types, alias)) if isinstance(m, ComfyChoice))


def field_name(wanted: str, taken: set[str]) -> str:
    name = re.sub(r"\W", "_", wanted).strip("_") or "value"
    if name[0].isdigit():
        name = f"input_{name}"
    if keyword.iskeyword(name) or hasattr(BaseModel, name):
        name = f"{name}_"
    return name if name not in taken else field_name(f"{name}_2", taken)


def scaffold(graph: dict[str, dict[str, Any]], catalog: Catalog, title: str) -> str:
    """The source of a workflow module for this graph."""
    counts: dict[str, int] = {}
    for node in graph.values():
        for input_name, value in (node.get("inputs") or {}).items():
            if not is_link(value):
                counts[input_name] = counts.get(input_name, 0) + 1
    fields: list[SchemaField] = []
    taken: set[str] = set()
    nodes = sorted(graph.items(), key=lambda item: node_order(item[0]))
    for node_id, node in nodes:
        class_type = node["class_type"]
        specs = node_inputs(catalog.object_info.get(class_type, {}))
        for input_name, value in (node.get("inputs") or {}).items():
            if is_link(value):
                continue
            field = SchemaField(node_id, class_type, input_name, value)
            unique = counts[input_name] == 1
            field.name = field_name(input_name if unique else f"{input_name}_{node_id}", taken)
            taken.add(field.name)
            field.describe(specs.get(input_name), catalog)
            fields.append(field)
    return render(nodes, fields, title)


def render(nodes: list[tuple[str, dict[str, Any]]], fields: list[SchemaField], title: str) -> str:
    by_place = {(f.node_id, f.input): f.name for f in fields}
    aliases = sorted({f.type for f in fields if f.type in workflow_types.__all__})
    lines = [
        f'"""{title}',
        "",
        "Generated by `comfy-gateway-cli scaffold`: each literal input of the graph is a field",
        "below, with the graph's value as its default. Rename the fields, drop the ones callers",
        "should not set (put their value back in the graph), and make this docstring say what it",
        "does.",
        '"""',
        "",
    ]
    if any(f.type.startswith("Literal[") for f in fields):
        lines.append("from typing import Literal\n")
    if any(f.type == "Any" for f in fields):
        lines.append("from typing import Any\n")
    lines.append("from pydantic import BaseModel, Field\n")
    if aliases:
        lines.append(f"from app.workflow_types import {', '.join(aliases)}\n")
    lines += ["", "class RequestSchema(BaseModel):"]
    lines += [f.source() for f in fields] or ["    pass"]
    lines += ["", "", "def generate_workflow(input: RequestSchema) -> dict:", "    return {"]
    for node_id, node in nodes:
        lines.append(f"        {py(node_id)}: {{")
        lines.append(f'            "class_type": {py(node["class_type"])},')
        lines.append('            "inputs": {')
        for input_name, value in (node.get("inputs") or {}).items():
            name = by_place.get((node_id, input_name))
            shown = f"input.{name}" if name else py(value)
            lines.append(f"                {py(input_name)}: {shown},")
        lines += ["            },", "        },"]
    lines += ["    }", ""]
    return "\n".join(lines)


def fetch_catalog(url: str) -> Catalog:
    response = httpx.get(f"{url.rstrip('/')}/object_info", timeout=60)
    response.raise_for_status()
    info: dict[str, Any] = response.json()
    return Catalog(info)


def add_command(commands: Any) -> None:
    """The `scaffold` command, on the CLI's parser (app.tools.cli)."""
    parser = commands.add_parser(
        "scaffold",
        help="write a workflow module from a ComfyUI graph",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("graph", type=Path, help="ComfyUI API-format graph (Save (API))")
    parser.add_argument("module", type=Path, help="the module to write, e.g. workflows/x/y.py")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--comfy-url", help="a running ComfyUI (default: the gateway's own)")
    source.add_argument("--object-info", type=Path, help="a saved copy of /object_info")
    parser.add_argument("--force", action="store_true", help="overwrite the module if it exists")
    # The parser goes along so that a refusal is its usage error (exit status 2).
    parser.set_defaults(handler=functools.partial(write_module, parser))


def write_module(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Write, format and load the module; 0 when it loads, 1 when it cannot be made."""
    if args.module.exists() and not args.force:
        parser.error(f"{args.module} exists (use --force to overwrite it)")
    try:
        graph = load_graph(args.graph)
        if args.object_info:
            catalog = Catalog.from_file(args.object_info)
        else:
            catalog = fetch_catalog(args.comfy_url or load_settings().comfy_url)
    except (OSError, ValueError, httpx.HTTPError, SettingsError) as e:
        print(f"scaffold: {e}", file=sys.stderr)
        return 1
    title = f"Workflow generated from {args.graph.name}."
    args.module.parent.mkdir(parents=True, exist_ok=True)
    args.module.write_text(scaffold(graph, catalog, title))
    if ruff := shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent)):
        # Long Literal[...] choices read better wrapped; without ruff the module works as is.
        subprocess.run([ruff, "format", "--quiet", str(args.module)], check=False)
    try:
        load_workflow(args.module.stem, args.module)
    except WorkflowLoadError as e:
        print(f"scaffold: wrote {args.module}, but it does not load: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.module}")
    return 0
