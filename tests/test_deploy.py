"""Offline checks of deploy/: Prometheus and Grafana configuration, KubeRay and cluster-launcher manifests, Dockerfile.

No Kubernetes, Docker engine or cloud account is needed: the files are parsed,
checked against the schemas their tools publish, and compared with the server's
defaults. ``promtool`` (Debian package ``prometheus``) must be installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import time
import tomllib

import jsonschema
import pytest
import ray
import yaml
from dfst.client.cli import app
from dfst.server import auth
from dfst.server.app import ServerConfig
from dfst.server.metrics import DEFAULT_METRICS_PORT, ServerMetrics, series_names
from ray._private import ray_constants
from ray.autoscaler._private.util import prepare_config, validate_config
from typer.testing import CliRunner

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "dfst.json"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RAYCLUSTER = DEPLOY / "kuberay" / "raycluster.yaml"
CLUSTER_LAUNCHER = DEPLOY / "cluster-launcher.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"

GRPC_PORT = ServerConfig().port

# Grafana's built-in variables and the dashboard's own, with values PromQL accepts.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$task": ".*"}

# Words of PromQL that look like metric names but are not.
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or",
                   "unless", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """Return the metric names a PromQL expression selects."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals, label values included
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery durations
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        is_function = expr[match.end():].lstrip().startswith("(")
        if not is_function and match.group(0).lower() not in PROMQL_KEYWORDS:
            names.add(match.group(0))
    return names


def dashboard_queries() -> list[str]:
    """Return every PromQL expression of the dashboard: panel targets and query variables."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        # Grafana's label_values(metric, label) selects series of `metric`.
        match = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
        assert match, f"variable {variable['name']}: unexpected query {query!r}"
        queries.append(match.group(1))
    return queries


def load_yaml_documents(path: pathlib.Path) -> list[dict]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document is not None]


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing; install it with `apt-get install -y prometheus` (Debian) and rerun")
    return path


# PromQL parsing


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("dfst_jobs_queued", {"dfst_jobs_queued"}),
        ('sum by (task) (rate(dfst_rollout_steps_total{task=~"$task"}[$__rate_interval]))',
         {"dfst_rollout_steps_total"}),
        ("histogram_quantile(0.9, sum by (le, kind) (rate(x_bucket[5m]))) / on (kind) y_count",
         {"x_bucket", "y_count"}),
        ('sum(a{outcome!="correct", task=~"add.*"}) and bool b offset 5m', {"a", "b"}),
        ("1e3 * c", {"c"}),
    ],
)
def test_promql_metric_names(expr, expected):
    assert promql_metric_names(expr) == expected


# Grafana


def test_dashboard_queries_name_exported_metrics():
    exported = series_names(ServerMetrics().registry)
    queries = dashboard_queries()
    assert queries
    for query in queries:
        names = promql_metric_names(query)
        assert names, f"query names no metric: {query}"
        unknown = names - exported
        assert not unknown, f"query {query!r} names metrics the server does not export: {sorted(unknown)}"


def test_dashboard_covers_core_metrics():
    used = set().union(*(promql_metric_names(query) for query in dashboard_queries()))
    for name in ("dfst_rollout_steps_per_second", "dfst_jobs_queued", "dfst_jobs_running", "dfst_jobs_finished_total",
                 "dfst_job_duration_seconds_bucket", "dfst_training_loss", "dfst_worker_restarts_total"):
        assert name in used


def test_dashboard_queries_pass_promtool(tmp_path):
    promtool = require_tool("promtool")
    rules = []
    for index, query in enumerate(dashboard_queries()):
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        rules.append({"record": f"dashboard:query_{index}", "expr": query})
    rules_file = tmp_path / "dashboard_rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    completed = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True,
                               timeout=60)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_dashboard_structure():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"]
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]


def test_grafana_provisioning_matches_dashboard():
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/dfst.yaml").read_text())
    assert datasources["apiVersion"] == 1
    assert providers["apiVersion"] == 1
    uids = {source["uid"] for source in datasources["datasources"] if source["type"] == "prometheus"}

    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids, panel["title"]
    assert all(provider["type"] == "file" and provider["options"]["path"] for provider in providers["providers"])


# Prometheus


def test_prometheus_config_passes_promtool():
    promtool = require_tool("promtool")
    completed = subprocess.run([promtool, "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True,
                               text=True, timeout=60)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_prometheus_config_targets():
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    dfst_targets = [target for group in jobs["dfst"]["static_configs"] for target in group["targets"]]
    assert dfst_targets == [f"127.0.0.1:{DEFAULT_METRICS_PORT}"]

    ray_files = [path for sd in jobs["ray"]["file_sd_configs"] for path in sd["files"]]
    assert ray_files == [f"/tmp/ray/{ray_constants.PROMETHEUS_SERVICE_DISCOVERY_FILE}"]


# KubeRay


def test_raycluster_has_crd_required_fields():
    cluster, service = load_yaml_documents(RAYCLUSTER)
    assert cluster["apiVersion"] == "ray.io/v1"
    assert cluster["kind"] == "RayCluster"
    assert cluster["metadata"]["name"]
    assert cluster["spec"]["rayVersion"] == ray.__version__

    # Required fields of the RayCluster CRD, version ray.io/v1 (KubeRay 1.7).
    head = cluster["spec"]["headGroupSpec"]
    assert head["template"]["spec"]["containers"]
    for group in cluster["spec"]["workerGroupSpecs"]:
        for field in ("groupName", "minReplicas", "maxReplicas", "template"):
            assert field in group, f"worker group {group.get('groupName')} lacks {field}"
        assert group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]
    for template in [head["template"]] + [group["template"] for group in cluster["spec"]["workerGroupSpecs"]]:
        for container in template["spec"]["containers"]:
            assert container["name"]
            assert container["image"]

    assert service["apiVersion"] == "v1"
    assert service["kind"] == "Service"


def test_raycluster_head_runs_server():
    cluster, _ = load_yaml_documents(RAYCLUSTER)
    template = cluster["spec"]["headGroupSpec"]["template"]
    container = template["spec"]["containers"][0]
    script = " ".join(container["command"] + container["args"])
    assert f"dfst-client serve --host 0.0.0.0 --port {GRPC_PORT}" in script
    assert f"--metrics-port {DEFAULT_METRICS_PORT}" in script
    assert "$KUBERAY_GEN_RAY_START_CMD" in script
    # Without this annotation KubeRay replaces the command with its own `ray start`.
    assert template["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"

    env = {variable["name"]: variable for variable in container["env"]}
    assert env["RAY_ADDRESS"]["value"] == "127.0.0.1:6379"
    # The server binds 0.0.0.0, which it allows only with a token.
    assert env[auth.TOKEN_ENV]["valueFrom"]["secretKeyRef"]["key"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["grpc"] == GRPC_PORT
    assert ports["metrics"] == DEFAULT_METRICS_PORT
    assert ports["gcs"] == 6379
    assert container["readinessProbe"]["grpc"]["port"] == GRPC_PORT


def shm_volumes(template: dict) -> list[dict]:
    spec = template["spec"]
    mounted = {mount["name"] for container in spec["containers"] for mount in container.get("volumeMounts", [])
               if mount["mountPath"] == "/dev/shm"}
    return [volume for volume in spec.get("volumes", []) if volume["name"] in mounted]


def test_raycluster_worker_groups():
    cluster, _ = load_yaml_documents(RAYCLUSTER)
    groups = {group["groupName"]: group for group in cluster["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"gpu-a100", "cpu"}

    gpu = groups["gpu-a100"]["template"]["spec"]
    limits = gpu["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] >= 1
    assert any("A100" in value for value in gpu["nodeSelector"].values())

    cpu = groups["cpu"]["template"]["spec"]
    assert "nvidia.com/gpu" not in cpu["containers"][0]["resources"]["limits"]

    for template in [cluster["spec"]["headGroupSpec"]["template"]] + [g["template"] for g in groups.values()]:
        volumes = shm_volumes(template)
        assert len(volumes) == 1
        assert volumes[0]["emptyDir"]["medium"] == "Memory"


def test_service_matches_head_ports():
    cluster, service = load_yaml_documents(RAYCLUSTER)
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    container_ports = {port["name"]: port["containerPort"] for port in head["ports"]}
    service_ports = {port["name"]: port for port in service["spec"]["ports"]}
    assert service_ports["grpc"]["port"] == GRPC_PORT
    assert service_ports["metrics"]["port"] == DEFAULT_METRICS_PORT
    for port in service_ports.values():
        assert port["targetPort"] in container_ports
    # KubeRay labels the head pod with its cluster name and node type.
    assert service["spec"]["selector"] == {"ray.io/cluster": cluster["metadata"]["name"], "ray.io/node-type": "head"}


# Ray cluster launcher


def test_cluster_launcher_matches_ray_schema():
    schema = json.loads((pathlib.Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load(CLUSTER_LAUNCHER.read_text())
    jsonschema.validate(config, schema)


def test_cluster_launcher_passes_ray_validation():
    # NOTE: prepare_config and validate_config are Ray internals (ray 2.60); `ray up` runs the same checks.
    config = yaml.safe_load(CLUSTER_LAUNCHER.read_text())
    validate_config(prepare_config(config))
    assert config["head_node_type"] in config["available_node_types"]
    resources = {name: node["resources"] for name, node in config["available_node_types"].items()}
    assert any(node.get("GPU", 0) > 0 and "accelerator_type:A100" in node for node in resources.values())


def test_cluster_launcher_starts_server():
    config = yaml.safe_load(CLUSTER_LAUNCHER.read_text())
    commands = " ".join(config["head_start_ray_commands"])
    assert f"dfst-client serve --host 0.0.0.0 --port {GRPC_PORT}" in commands
    assert f"--metrics-port {DEFAULT_METRICS_PORT}" in commands
    assert "RAY_ADDRESS=127.0.0.1:6379" in commands
    token_file = re.search(r"--token-file (\S+)", commands).group(1)
    assert token_file in config["file_mounts"]


# flags of `dfst-client serve` used by the manifests


def serve_flags(command: str) -> set[str]:
    start = command.index("dfst-client serve")
    words = command[start:].split("&")[0].split()
    return {word for word in words if word.startswith("--")}


def test_manifest_serve_flags_exist():
    help_text = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200).output
    cluster, _ = load_yaml_documents(RAYCLUSTER)
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    launcher = yaml.safe_load(CLUSTER_LAUNCHER.read_text())
    commands = [" ".join(head["args"]), " ".join(launcher["head_start_ray_commands"])]
    flags = set().union(*(serve_flags(command) for command in commands))
    assert {"--host", "--port", "--metrics-port"} <= flags
    for flag in flags:
        assert flag in help_text, f"`dfst-client serve` has no option {flag}"


# Dockerfile


def test_dockerfile_pins_torch_as_readme():
    readme_pin = re.search(r"torch==([\d.]+)", (ROOT / "README.md").read_text()).group(1)
    dockerfile = DOCKERFILE.read_text()
    assert f"ARG TORCH_VERSION={readme_pin}\n" in dockerfile
    assert '"torch==${TORCH_VERSION}"' in dockerfile


def test_dockerfile_copies_every_package():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    dockerfile = DOCKERFILE.read_text()
    for folder in folders:
        assert re.search(rf"^COPY {folder} \./{folder}$", dockerfile, re.MULTILINE), folder


def test_dockerfile_ports_and_command():
    dockerfile = DOCKERFILE.read_text()
    exposed = {int(port) for line in re.findall(r"^EXPOSE (.+)$", dockerfile, re.MULTILINE) for port in line.split()}
    assert {GRPC_PORT, DEFAULT_METRICS_PORT} <= exposed
    command = json.loads(re.search(r"^CMD (.+)$", dockerfile, re.MULTILINE).group(1))
    assert command[:2] == ["dfst-client", "serve"]
    assert command[command.index("--port") + 1] == str(GRPC_PORT)
    assert command[command.index("--metrics-port") + 1] == str(DEFAULT_METRICS_PORT)


# the head container's shell script, run with stand-ins for `ray` and `dfst-client`

FAKE_RAY = """#!/bin/bash
case "$1" in
  status) test -e "$FAKE_DIR/ray-up" ;;
  stop) echo stop >> "$FAKE_DIR/log" ;;
  start) touch "$FAKE_DIR/ray-up"; echo start >> "$FAKE_DIR/log"; exec sleep 600 ;;
esac
"""

FAKE_CLIENT = """#!/bin/bash
echo "dfst-client $*" >> "$FAKE_DIR/log"
if [ -n "$FAKE_SERVER_EXIT" ]; then exit "$FAKE_SERVER_EXIT"; fi
trap 'echo term >> "$FAKE_DIR/log"; exit 0' TERM
while true; do sleep 0.1; done
"""


def start_head_script(tmp_path: pathlib.Path, server_exit: str = "") -> subprocess.Popen:
    """Run the head container's command with fake `ray` and `dfst-client` executables in PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("ray", FAKE_RAY), ("dfst-client", FAKE_CLIENT)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    cluster, _ = load_yaml_documents(RAYCLUSTER)
    container = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_DIR": str(tmp_path), "FAKE_SERVER_EXIT": server_exit,
        "KUBERAY_GEN_RAY_START_CMD": "ray start --head --block", "RAY_ADDRESS": "127.0.0.1:6379",
    }
    return subprocess.Popen(container["command"] + container["args"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_log_line(log: pathlib.Path, prefix: str, timeout_s: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        if any(line.startswith(prefix) for line in lines):
            return lines
        time.sleep(0.1)
    pytest.fail(f"no line starting with {prefix!r} in {log} within {timeout_s} s")


def test_head_script_forwards_sigterm(tmp_path):
    process = start_head_script(tmp_path)
    try:
        lines = wait_for_log_line(tmp_path / "log", "dfst-client")
        assert lines[0] == "start"
        assert lines[1].startswith(f"dfst-client serve --host 0.0.0.0 --port {GRPC_PORT}")

        process.send_signal(signal.SIGTERM)
        # `wait -n` interrupted by SIGTERM returns 128 + 15, the script's last status.
        assert process.wait(timeout=30) == 143
        lines = (tmp_path / "log").read_text().splitlines()
        assert lines[2:] == ["term", "stop"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_head_script_exits_with_server(tmp_path):
    # A server that exits ends the container, so Kubernetes restarts it.
    process = start_head_script(tmp_path, server_exit="3")
    try:
        assert process.wait(timeout=30) == 3
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
