"""The deployment files parse as what TF Serving and the orchestrators read."""

from __future__ import annotations

import pathlib

import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

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
