"""Which files a graph may name: every job's graph (/prompt, the workflow endpoints, every
facade, the passthrough's POST /prompt) passes check_names before anything runs.

ComfyUI reads a node's file name as a path below its input folder, with two exceptions that
reach further: a name that ends in `[input]`, `[output]` or `[temp]` names a file of that folder
(folder_paths.annotated_filepath, applied by every node that loads a file, custom nodes
included), and on ComfyUI 0.3 a name with `..` or an absolute path leaves the folder. The rules:

- For every caller but an admin key: the inputs the gateway knows to name a file or folder
  (FILE_INPUTS, and the loaders of app.jobs.inputs where ComfyUI reads the value itself: the
  passthrough) hold a relative path (no `..` segment, no leading `/` or backslash, no drive).
  The gateway's own loaders refuse paths already (app.jobs.inputs), where a value may also be
  a URL or base64.
- For a key's job (API keys on, not an admin key), in every string input of every node: no
  folder annotation (`x.png [output]` would read any key's outputs), and no path into a folder
  the gateway made (`gw-…`: other keys' uploads, other jobs' inputs) but the key's own
  (app.core.keys.key_folder), in any segment of a path. Every string, because which inputs of a
  custom node name files is the node's secret; a text ending in exactly ` [output]` is the
  price (any character after it passes), and the `gw-` rule looks only at values with a `/` or
  a backslash (and at file inputs), so a prompt that merely starts with `gw-` passes.

Files at the top of the input folder and in folders the operator made are shared by every key;
uploads of a key never land there (app.compat.comfy.upload).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from app.core.errors import InvalidRequest
from app.core.keys import GATEWAY_FOLDER_PREFIX, Caller
from app.jobs.inputs import LOADERS

# class_type -> inputs that name a file or folder ComfyUI reads (or, the dataset savers, writes)
# by joining it to one of its folders, besides LOADERS.
FILE_INPUTS: dict[str, tuple[str, ...]] = {
    "LoadLatent": ("latent",),
    "Load3D": ("model_file",),
    "Load3DAnimation": ("model_file",),
    "Load3DAdvanced": ("model_file",),
    "WebcamCapture": ("image",),
    "Painter": ("mask",),
    "LoadImageDataSetFromFolder": ("folder",),
    "LoadImageTextDataSetFromFolder": ("folder",),
    "LoadVideoDataSetFromFolder": ("folder",),
    "LoadVideoTextDataSetFromFolder": ("folder",),
    "SaveImageDataSetToFolder": ("folder_name",),
    "SaveImageTextDataSetToFolder": ("folder_name",),
}
ANNOTATIONS = ("[input]", "[output]", "[temp]")  # what annotated_filepath looks for, as it does
SEPARATORS = re.compile(r"[/\\]")
DRIVE = re.compile(r"^[A-Za-z]:")


def check_names(graph: Any, caller: Caller, *, names_only: bool = False) -> None:
    """Raise InvalidRequest, located at the input, for a file name the caller may not give.

    `names_only`: ComfyUI reads every loader input itself (the passthrough), so the loaders'
    values are held to the path rule too.
    """
    if caller.admin or not isinstance(graph, dict):
        return
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
            continue  # check_graph says what is wrong with its shape
        class_type = str(node.get("class_type"))
        files = set(FILE_INPUTS.get(class_type, ()))
        if names_only:
            files |= set(LOADERS.get(class_type, {}))
        for name, value in node["inputs"].items():
            where = f"prompt.{node_id}.inputs.{name}"
            for text in strings(value):
                if name in files:
                    check_path(text, where)
                if caller.tenant:
                    check_scope(text, where, caller.folder, file=name in files)


def strings(value: Any) -> Iterator[str]:
    """The strings in an input's value: itself, or those in a list or object (a node such as
    Load3D takes an object of file names), but not the node id of a link."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list) and not (len(value) == 2 and isinstance(value[1], int)):
        for item in value:
            yield from strings(item)


def check_path(text: str, where: str) -> None:
    """A relative path of plain segments, as every file input needs."""
    if text.startswith(("/", "\\")) or DRIVE.match(text) or ".." in SEPARATORS.split(text):
        raise InvalidRequest(
            f"{where}: a file name must be a path inside ComfyUI's input folder (no `..`, no "
            f"absolute path), not {shown(text)}",
            location=where,
        )


def check_scope(text: str, where: str, own: str | None, *, file: bool) -> None:
    """No folder annotation, and no gateway folder but the key's own."""
    if text.endswith(ANNOTATIONS):
        raise InvalidRequest(
            f"{where}: a name ending in [input], [output] or [temp] makes ComfyUI read another "
            f"folder, where other keys' files are: give a name in the input folder (an upload "
            f"of this key's, or a shared file), not {shown(text)} (in a text, add any character "
            "after the brackets)",
            location=where,
        )
    parts = SEPARATORS.split(text)
    if (file or len(parts) > 1) and any(
        part.startswith(GATEWAY_FOLDER_PREFIX) and part != own for part in parts
    ):
        raise InvalidRequest(
            f"{where}: {shown(text)} is in a folder of another API key's uploads or another "
            f"job's inputs; this key's uploads are in {own}/",
            location=where,
        )


def shown(text: str) -> str:
    quoted = repr(text)
    return quoted if len(quoted) <= 80 else quoted[:77] + "..."
