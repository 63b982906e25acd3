"""comfyui-api's manifest besides models: custom nodes cloned from a real local git repository
(file://, never the network) at their ref forms, idempotently, with their requirements; `apt`
refused with the reason when not root; registry names refused with the reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.comfy.process import ComfyStartError
from app.core.settings import load_settings
from app.install import clone, read_extras, split_ref

PIP = [sys.executable, "-m", "pip", "install", "--no-index"]  # offline: only what is installed
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True,
                          env={**os.environ, **GIT_ENV})  # fmt: skip
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A small custom node with two tagged versions."""
    path = tmp_path / "repos" / "tiny-node"  # not .../src/...: their Bitbucket form
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    (path / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\nVERSION = 1\n")
    (path / "requirements.txt").write_text("PyYAML\n")  # installed already: pip stays offline
    git("add", ".", cwd=path)
    git("commit", "-q", "-m", "v1", cwd=path)
    git("tag", "v1", cwd=path)
    (path / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\nVERSION = 2\n")
    git("commit", "-q", "-am", "v2", cwd=path)
    git("tag", "v2", cwd=path)
    return path


@pytest.mark.parametrize(
    ("url", "base", "ref"),
    [
        ("https://github.com/u/repo@v1.2", "https://github.com/u/repo", "v1.2"),
        ("https://github.com/u/repo.git@abc123", "https://github.com/u/repo.git", "abc123"),
        ("https://github.com/u/repo/tree/main", "https://github.com/u/repo", "main"),
        ("https://github.com/u/repo/commit/abc", "https://github.com/u/repo", "abc"),
        ("https://github.com/u/repo/releases/tag/v1", "https://github.com/u/repo", "v1"),
        ("https://gitlab.com/g/repo/-/tree/dev", "https://gitlab.com/g/repo", "dev"),
        ("https://gitlab.com/g/repo/-/commit/abc", "https://gitlab.com/g/repo", "abc"),
        ("https://bitbucket.org/w/repo/src/v1/README.md", "https://bitbucket.org/w/repo", "v1"),
        ("https://bitbucket.org/w/repo/commits/abc", "https://bitbucket.org/w/repo", "abc"),
        ("https://github.com/u/repo", "https://github.com/u/repo", None),
    ],
)
def test_their_ref_forms(url: str, base: str, ref: str | None) -> None:
    assert split_ref(url) == (base, ref)


def test_a_node_is_cloned_at_its_ref_and_installing_again_changes_nothing(
    repo: Path, tmp_path: Path
) -> None:
    root = tmp_path / "ComfyUI" / "custom_nodes"
    v1 = git("rev-parse", "v1", cwd=repo)
    node = clone(f"file://{repo}@v1", root, PIP)
    assert (node.name, node.ref, node.commit) == ("tiny-node", "v1", v1)
    assert "VERSION = 1" in (root / "tiny-node" / "__init__.py").read_text()
    again = clone(f"file://{repo}@v1", root, PIP)
    assert again == node
    moved = clone(f"file://{repo}@v2", root, PIP)  # a new pin: fetched and checked out
    assert moved.commit == git("rev-parse", "v2", cwd=repo)
    assert "VERSION = 2" in (root / "tiny-node" / "__init__.py").read_text()


def test_a_failure_stops_start_up_saying_which_and_why(repo: Path, tmp_path: Path) -> None:
    root = tmp_path / "custom_nodes"
    with pytest.raises(ComfyStartError) as no_ref:
        clone(f"file://{repo}@v9", root, PIP)
    assert "v9" in str(no_ref.value) and "custom_nodes" in str(no_ref.value)
    (repo / "requirements.txt").write_text("no-such-package-anywhere==1.0\n")
    git("commit", "-q", "-am", "bad requirement", cwd=repo)
    shutil.rmtree(root)
    with pytest.raises(ComfyStartError) as bad:
        clone(f"file://{repo}", root, PIP)
    assert "requirements.txt" in str(bad.value)
    (root / "other").mkdir(parents=True)
    with pytest.raises(ComfyStartError) as not_git:
        clone("file:///somewhere/other@v1", root, PIP)
    assert "not a git clone" in str(not_git.value)


def test_a_registry_name_says_it_needs_the_comfy_cli_and_the_internet(tmp_path: Path) -> None:
    with pytest.raises(ComfyStartError) as raised:
        clone("comfyui-impact-pack", tmp_path, PIP)
    assert "comfy CLI" in str(raised.value) and "internet" in str(raised.value)


def test_the_manifest_lists_are_read_from_manifest_json(tmp_path: Path) -> None:
    manifest = {"apt": ["ffmpeg"], "pip": ["x==1"], "custom_nodes": ["https://h/r@v1"],
                "models": {"before_start": []}}  # fmt: skip
    settings = load_settings(manifest_json=json.dumps(manifest))
    assert read_extras(settings) == {"apt": ["ffmpeg"], "pip": ["x==1"],
                                     "custom_nodes": ["https://h/r@v1"]}  # fmt: skip
    with pytest.raises(ComfyStartError):
        read_extras(load_settings(manifest_json=json.dumps({"pip": ["--index-url=http://x"]})))


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop root")
def test_apt_without_root_says_why(tmp_path: Path) -> None:
    code = "from app.install import install_apt; install_apt(['ffmpeg'])"
    argv = [sys.executable, "-c", code]
    if os.geteuid() == 0:  # run it as nobody: the gateway as an image's non-root user
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=Path.cwd(), check=False)
    assert done.returncode != 0
    assert "needs root" in done.stderr and "apt-get install -y ffmpeg" in done.stderr
