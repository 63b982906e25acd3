"""The deployment files' settings, run for real: a gateway started with exactly the environment
the Dockerfile's ENV and deploy/kubernetes/deployment.yaml give it, probed as the kubelet does.

Only machine-specific values are replaced: paths (the image's folders, the secret's file) and
the two ports (3000 and 8188 may be taken here). Everything else is read from the files, so a
setting there that stops the pod from turning ready fails this test.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from app.core.settings import Settings
from tests.integration.harness import COMFY_HOME, ROOT, Gateway

SETTINGS = {name.upper() for name in Settings.model_fields}
KUBELET = {"User-Agent": "kube-probe/1.37", "Accept": "*/*", "Connection": "close"}


def dockerfile_env(text: str) -> dict[str, str]:
    """The ENV instructions of a Dockerfile, continuation lines joined, quotes removed."""
    joined = re.sub(r"\\\n", " ", text)
    env: dict[str, str] = {}
    for line in joined.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def deployment_env(manifest: dict[str, Any]) -> dict[str, str]:
    """The gateway container's env: plain values; secrets and pod fields as a pod has them."""
    [container] = manifest["spec"]["template"]["spec"]["containers"]
    env = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "fieldRef" in item["valueFrom"]:
            env[item["name"]] = "comfy-gateway-7d9f8-abcde"  # metadata.name of a pod
        # an optional secretKeyRef (WEBHOOK_SECRET) whose secret lacks the key: unset
    return env


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("deployed")
    gateway = Gateway(workdir)
    docker = dockerfile_env((ROOT / "Dockerfile").read_text())
    manifest = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "deployment.yaml").read_text())
    kubernetes = deployment_env(manifest)
    keys = workdir / "api-keys"
    keys.write_text("# mounted from the secret\ndeployed-test-key-0123456789\n")
    python = str(COMFY_HOME.parent / "venv" / "bin" / "python")
    placeholders = {
        "${COMFY_PYTHON}": python,  # from the base image
        "${COMFY_ARGS}": "--cpu",  # the CPU base image's
        "${PATH}": os.environ["PATH"],
        "/opt/gateway/workflows": str(ROOT / "workflows"),
        "/etc/comfy-gateway/api-keys": str(keys),
        "/home/gateway": str(workdir),
        "--port 8188": f"--port {gateway.comfy_port}",
    }
    env = {**docker, **kubernetes}
    for name, value in env.items():
        for placeholder, here in placeholders.items():
            value = value.replace(placeholder, here)
        env[name] = value
    assert env.pop("PORT") == "3000" and env.pop("COMFYUI_PORT_HOST") == "8188"
    env.update(PORT=str(gateway.port), COMFYUI_PORT_HOST=str(gateway.comfy_port))
    env["COMFY_HOME"] = str(COMFY_HOME)  # the base image's ENV
    outside = {k: v for k, v in os.environ.items() if k not in SETTINGS and k != "CONFIG_FILE"}
    gateway.env = {**outside, **env}
    try:
        yield gateway.start(timeout_s=300)
    finally:
        gateway.stop()


def test_the_pod_turns_ready_to_an_ipv4_kubelet_probe(deployed: Gateway) -> None:
    assert deployed.env["HOST"] == "::"  # as the manifest and the image say
    for path in ("/health", "/ready"):
        answer = httpx.get(f"http://127.0.0.1:{deployed.port}{path}", headers=KUBELET, timeout=5)
        assert answer.status_code == 200, f"{path}: {answer.text}"
    # and over IPv6, for dual-stack clusters and SaladCloud's container gateway
    assert httpx.get(f"http://[::1]:{deployed.port}/ready", timeout=5).status_code == 200


def test_the_deployed_settings_are_the_ones_running(deployed: Gateway) -> None:
    ready = httpx.get(f"http://127.0.0.1:{deployed.port}/ready", timeout=5).json()
    assert ready == {"status": "ready", "queue_depth": 0}
    # API_KEYS_FILE from the secret is in force: work needs a key, the probes do not
    refused = httpx.get(f"http://127.0.0.1:{deployed.port}/models", timeout=5)
    assert refused.status_code == 401
    key = {"Authorization": "Bearer deployed-test-key-0123456789"}
    assert httpx.get(f"http://127.0.0.1:{deployed.port}/models", headers=key).status_code == 200
    assert '"message"' in deployed.log_text()  # LOG_FORMAT=json
