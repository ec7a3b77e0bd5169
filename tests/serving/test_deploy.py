"""The deployment files parse as what TF Serving and the orchestrators read."""

from __future__ import annotations

import ast
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import time

import httpx
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tests.conftest import REPO_ROOT

DEPLOY = pathlib.Path(__file__).resolve().parents[2] / "deploy"
BATCHING_FIELDS = {
    "max_batch_size",
    "batch_timeout_micros",
    "max_enqueued_batches",
    "num_batch_threads",
    "allowed_batch_sizes",
    "pad_variable_length_inputs",
}


def test_model_config_serves_the_pretrained_and_trained_taggers():
    config = text_format.Parse((DEPLOY / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    models = {c.name: c for c in config.model_config_list.config}
    assert set(models) == {"mtat_crnn", "msd_musicnn", "mtt_musicnn", "short_chunk_res", "crnn"}
    for name, model in models.items():
        assert model.base_path == f"/models/{name}" and model.model_platform == "tensorflow"


def test_batching_parameters_use_known_fields():
    fields = set()
    for line in (DEPLOY / "batching_parameters.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            fields.add(line.split()[0].rstrip(":"))
    assert fields <= BATCHING_FIELDS and "max_batch_size" in fields


def test_compose_and_kubernetes_point_at_the_configs():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    command = compose["services"]["tf-serving"]["command"]
    assert "--model_config_file=/config/models.config" in command
    assert "--batching_parameters_file=/config/batching_parameters.txt" in command
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--model_config_file=/config/models.config" in container["args"]
    assert {p["containerPort"] for p in container["ports"]} == {8500, 8501}
    service = next(d for d in documents if d["kind"] == "Service")
    assert {p["port"] for p in service["spec"]["ports"]} == {8500, 8501}


def _dockerfile() -> list[tuple[str, str]]:
    """The recipe's instructions as (INSTRUCTION, arguments), continuation lines joined, comments left out."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "app.Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _exec_form(instructions, name: str) -> list[str]:
    (arguments,) = [args for instruction, args in instructions if instruction == name]
    return json.loads(arguments)


def test_the_app_recipe_is_pinned_non_root_health_checked_and_copies_every_package():
    instructions = _dockerfile()
    known = {"FROM", "ENV", "WORKDIR", "COPY", "RUN", "USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD"}
    assert {instruction for instruction, _ in instructions} <= known
    (base,) = [args for instruction, args in instructions if instruction == "FROM"]
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", base), base  # A pinned release, never `latest`.
    (user,) = [args for instruction, args in instructions if instruction == "USER"]
    assert int(user.split(":")[0]) != 0 and int(user.split(":")[1]) != 0
    (healthcheck,) = [args for instruction, args in instructions if instruction == "HEALTHCHECK"]
    assert "/healthz" in healthcheck and "CMD [" in healthcheck
    copied = [args.split()[:-1] for instruction, args in instructions if instruction == "COPY"]
    sources = {source.rstrip("/") for paths in copied for source in paths}
    assert all((REPO_ROOT / source).exists() for source in sources), sources
    assert set(setup_packages()) | {"setup.py", "tf_startup.py"} <= sources  # Everything the app imports.
    assert _exec_form(instructions, "ENTRYPOINT") == ["python", "-m", "serving.app"]


def setup_packages() -> list[str]:
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    (assignment,) = [node for node in tree.body if isinstance(node, ast.Assign) and node.targets[0].id == "PACKAGES"]
    return ast.literal_eval(assignment.value)


def test_compose_runs_the_app_beside_tf_serving_reading_everything_read_only():
    app = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["app"]
    assert app["build"]["dockerfile"] == "deploy/app.Dockerfile"
    assert all(volume.endswith(":ro") for volume in app["volumes"])
    assert "--server=tf-serving:8500" in app["command"] and "--index_dir=/index" in app["command"]
    assert app["depends_on"]["tf-serving"]["condition"] == "service_healthy"
    assert app["read_only"] is True and "/tmp" in app["tmpfs"]


def test_the_app_starts_as_the_recipe_starts_it_and_its_health_check_passes(demo_index, tmp_path):
    """ENTRYPOINT + CMD, with the container's paths and port mapped to this machine's (no container engine here)."""
    instructions = _dockerfile()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    index_dir = str(demo_index[0])
    before = {path: path.stat().st_mtime_ns for path in demo_index[0].rglob("*")}

    def on_this_machine(argument: str) -> str:
        argument = argument.replace("--index_dir=/index", f"--index_dir={index_dir}")
        return argument.replace("--port=8080", f"--port={port}").replace(
            "http://127.0.0.1:8080/", f"http://127.0.0.1:{port}/"
        )

    command = [on_this_machine(a) for a in _exec_form(instructions, "ENTRYPOINT") + _exec_form(instructions, "CMD")]
    command[0] = sys.executable
    env = {**os.environ, **_environment(instructions), "TMPDIR": str(tmp_path)}
    (healthcheck,) = [args for instruction, args in instructions if instruction == "HEALTHCHECK"]
    probe_command = [on_this_machine(a) for a in json.loads(healthcheck.split("CMD", 1)[1])]
    probe_command[0] = sys.executable
    with open(tmp_path / "app.log", "wb") as log:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while subprocess.run(probe_command, capture_output=True, timeout=30).returncode != 0:
            assert process.poll() is None, (tmp_path / "app.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the health check never passed"
            time.sleep(1)
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()
        assert health["status"] == "ok" and health["tracks"] == 16
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert {path: path.stat().st_mtime_ns for path in demo_index[0].rglob("*")} == before  # Read-only.


def _environment(instructions) -> dict[str, str]:
    (arguments,) = [args for instruction, args in instructions if instruction == "ENV"]
    return dict(pair.split("=", 1) for pair in arguments.split())
