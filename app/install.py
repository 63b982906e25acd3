"""comfyui-api's manifest, the part besides models: `apt` and `pip` packages and `custom_nodes`,
installed before ComfyUI starts, in their order (apt, pip, custom nodes), each step checked.

A custom node is a git URL, pinned by a ref in one of their forms (`<repo>@<ref>`, GitHub
`/tree/<ref>`, `/commit/<sha>`, `/releases/tag/<tag>`, GitLab `/-/tree/<ref>`,
`/-/commit/<sha>`, Bitbucket `/src/<ref>`, `/commits/<sha>`), cloned into
COMFY_HOME/custom_nodes/<repo name> (or, already there, fetched and checked out at the ref:
installing twice changes nothing), its requirements.txt installed into ComfyUI's Python. `file://`
URLs are clones here too (a local mirror; theirs takes them for registry names). A registry name
needs the comfy CLI and the internet (api.comfy.org): start-up says so and stops. `apt` needs
root: run as another user, start-up says so and stops. Whatever fails stops start-up with the
command and the end of its output; what was installed is listed (name, ref, commit) in /health.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from app.comfy.command import CommandLine
from app.comfy.process import ComfyStartError
from app.core.schemas import CustomNode
from app.core.settings import Settings

log = logging.getLogger(__name__)

STEP_TIMEOUT_S = 1800  # one apt, pip or git command; a large requirements.txt takes minutes
# Their ref forms, tried in their order (src/git-url-parser.ts): (pattern, its ref group).
REF_FORMS = (
    re.compile(r"^(.+?)@([^@/]+)$"),
    re.compile(r"^(.+?)/-/tree/([^/]+)$"),
    re.compile(r"^(.+?)/-/commit/([^/]+)$"),
    re.compile(r"^(.+?)/tree/([^/]+)$"),
    re.compile(r"^(.+?)/commit/([^/]+)$"),
    re.compile(r"^(.+?)/releases/tag/([^/]+)$"),
    re.compile(r"^(.+?)/src/([^/]+)(?:/.*)?$"),
    re.compile(r"^(.+?)/commits/([^/]+)$"),
)
CLONE_SCHEMES = ("https://", "http://", "file://")


def split_ref(url: str) -> tuple[str, str | None]:
    """(the repository URL, the ref) from a URL in one of their forms."""
    for form in REF_FORMS:
        found = form.match(url)
        if found:
            return found.group(1), found.group(2)
    return url, None


def read_extras(settings: Settings) -> dict[str, list[str]]:
    """The manifest's `apt`, `pip` and `custom_nodes` (MANIFEST_JSON, else the manifest file);
    ComfyStartError naming a bad one."""
    text: str | None = settings.manifest_json
    if text is None and settings.models_manifest is not None:
        text = settings.models_manifest.read_text()
    loaded: Any = yaml.safe_load(text) if text else None
    if not isinstance(loaded, dict):
        return {}
    extras: dict[str, list[str]] = {}
    for key in ("apt", "pip", "custom_nodes"):
        value = loaded.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ComfyStartError(f"manifest: `{key}` must be a list of strings")
        bad = [v for v in value if v.startswith("-")]
        if bad:
            raise ComfyStartError(f"manifest: `{key}` entry {bad[0]!r} is an option, not a name")
        extras[key] = value
    return extras


def install(settings: Settings) -> list[CustomNode]:
    """Install the manifest's apt and pip packages and custom nodes; ComfyStartError says what
    failed. Runs in a worker thread before ComfyUI starts."""
    extras = read_extras(settings)
    if extras.get("apt"):
        install_apt(extras["apt"])
    pip = pip_command(settings)
    if extras.get("pip"):
        run([*pip, *extras["pip"]], "manifest pip")
    nodes = [clone(url, settings.comfy_home / "custom_nodes", pip)
             for url in extras.get("custom_nodes", [])]  # fmt: skip
    return nodes


def install_apt(packages: list[str]) -> None:
    if os.geteuid() != 0:
        raise ComfyStartError(
            f"manifest apt: installing {', '.join(packages)} needs root, and the gateway runs as "
            f"uid {os.geteuid()}: install them into the image (apt-get install -y "
            f"{' '.join(packages)}), or remove `apt` from the manifest"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update"], "manifest apt", env)
    run(["apt-get", "install", "-y", "--", *packages], "manifest apt", env)


def pip_command(settings: Settings) -> list[str]:
    """pip of ComfyUI's Python: the bundled environment's, or with CMD (a ComfyUI of the
    image's) `uv pip install --system` where uv exists, else `pip` on PATH (as theirs)."""
    if not settings.cmd:
        return [str(CommandLine(settings, 0).python()), "-m", "pip", "install"]
    if shutil.which("uv"):
        venv = any(os.environ.get(v) for v in ("VIRTUAL_ENV", "CONDA_DEFAULT_ENV"))
        return ["uv", "pip", "install", *([] if venv else ["--system"])]
    return ["pip", "install"]


def clone(url: str, root: Path, pip: list[str]) -> CustomNode:
    """One custom node in place at its ref, with its requirements; ComfyStartError if not."""
    where = f"manifest custom_nodes {url!r}"
    if not url.startswith(CLONE_SCHEMES):
        raise ComfyStartError(
            f"{where}: a registry name needs the comfy CLI (`comfy node install`) and the "
            "internet (api.comfy.org), which this gateway does not use: give the node's git URL "
            "with a ref instead, e.g. https://github.com/<owner>/<repo>@<tag>"
        )
    base, ref = split_ref(url)
    if ref is not None and ref.startswith("-"):
        raise ComfyStartError(f"{where}: the ref {ref!r} is an option, not a ref")
    name = base.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    if not name or name in (".", ".."):
        raise ComfyStartError(f"{where}: no repository name in the URL")
    target = root / name
    if target.exists() and not (target / ".git").exists():
        raise ComfyStartError(f"{where}: {target} is there and is not a git clone: remove it")
    if not target.exists():
        root.mkdir(parents=True, exist_ok=True)
        run(["git", "clone", "--", base, str(target)], where)
    elif ref is not None:
        run(["git", "-C", str(target), "fetch", "--all", "--tags"], where)
    if ref is not None:
        run(["git", "-C", str(target), "checkout", "--detach", ref], where)
    else:
        log.warning("%s: no ref: the clone is not pinned (theirs: `git pull` on each start)", where)
    if (target / "requirements.txt").is_file():
        run([*pip, "-r", str(target / "requirements.txt")], f"{where} requirements.txt")
    commit = run(["git", "-C", str(target), "rev-parse", "HEAD"], where).strip()
    node = CustomNode(name=name, url=base, ref=ref, commit=commit)
    log.info("custom node %s at %s (%s)", name, ref or "its default branch", commit[:12])
    return node


def run(argv: list[str], what: str, env: dict[str, str] | None = None) -> str:
    """Run one step; its output, or ComfyStartError with the end of it."""
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, env=env, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ComfyStartError(f"{what}: {argv[0]} could not run: {e}") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-600:]
        raise ComfyStartError(
            f"{what}: `{' '.join(argv[:4])} …` failed ({done.returncode}): {tail}"
        )
    return done.stdout
