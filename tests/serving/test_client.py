"""The gRPC and REST client against the exported SavedModel's real signatures.

No TF Serving binary can be installed here, so a minimal stand-in serves the
Predict API with the real protos and the real SavedModel: it checks each
request against the signature definition (input names, dtype, rank) the way
TF Serving does, runs the signature and returns its outputs.
"""

from __future__ import annotations

import concurrent.futures
import http.server
import json
import re
import threading

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.client import Prediction, ServingError, TaggerClient

MODEL_NAME = "short_chunk_res"


def _check_and_run(loaded, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    signature = loaded.signatures[signature_name]
    specs = signature.structured_input_signature[1]
    if set(inputs) != set(specs):
        raise ValueError(f"inputs {sorted(inputs)} do not match the signature's {sorted(specs)}")
    for name, spec in specs.items():
        if inputs[name].dtype != spec.dtype.as_numpy_dtype or inputs[name].ndim != spec.shape.rank:
            raise ValueError(f"input {name}: {inputs[name].dtype}{inputs[name].shape} does not fit {spec}")
    return {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, loaded):
        self.loaded = loaded
        self.requests = []

    def Predict(self, request, context):  # noqa: N802 - the gRPC method name.
        self.requests.append(request)
        if request.model_spec.name != MODEL_NAME:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request.model_spec.name}")
        inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        try:
            outputs = _check_and_run(self.loaded, request.model_spec.signature_name or "serving_default", inputs)
        except (ValueError, KeyError, tf.errors.InvalidArgumentError) as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        response = predict_pb2.PredictResponse()
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response


@pytest.fixture(scope="module")
def loaded(trained):
    return tf.saved_model.load(trained[3])


@pytest.fixture(scope="module")
def grpc_server(loaded):
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
    service = _PredictionService(loaded)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", service
    server.stop(None)


@pytest.fixture(scope="module")
def rest_server(loaded):
    route = re.compile(rf"^/v1/models/{MODEL_NAME}(/versions/\d+)?:predict$")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server method name.
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if not route.match(self.path):
                return self._reply(404, {"error": f"Servable not found for path {self.path}"})
            inputs = {k: np.asarray(v, dtype=np.float32) for k, v in body["inputs"].items()}
            try:
                outputs = _check_and_run(loaded, body.get("signature_name", "serving_default"), inputs)
            except (ValueError, tf.errors.InvalidArgumentError) as error:
                return self._reply(400, {"error": str(error)})
            values = {k: v.tolist() for k, v in outputs.items()}
            self._reply(200, {"outputs": next(iter(values.values())) if len(values) == 1 else values})

        def _reply(self, status, payload):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _waveforms(batch=2, seconds=2.0):
    return np.random.default_rng(0).normal(0, 0.1, (batch, int(seconds * 16000))).astype(np.float32)


def _direct(loaded, waveforms):
    outputs = loaded.signatures["serving_default"](waveform=tf.constant(waveforms))
    return Prediction(tags=outputs["tags"].numpy(), embedding=outputs["embedding"].numpy())


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_client_matches_the_signature(protocol, loaded, grpc_server, rest_server):
    server = grpc_server[0] if protocol == "grpc" else rest_server
    client = TaggerClient(server, MODEL_NAME, protocol=protocol)
    waveforms = _waveforms()
    expected = _direct(loaded, waveforms)
    result = client.predict(waveforms)
    np.testing.assert_allclose(result.tags, expected.tags, atol=1e-6)
    np.testing.assert_allclose(result.embedding, expected.embedding, atol=1e-6)
    tags_only = client.predict(waveforms[0], signature="tags")
    assert tags_only.embedding is None and tags_only.tags.shape == expected.tags[:1].shape
    embedding_only = client.predict(waveforms, signature="embed")
    assert embedding_only.tags is None
    np.testing.assert_allclose(embedding_only.embedding, expected.embedding, atol=1e-6)


def test_grpc_request_carries_model_version_and_signature(grpc_server):
    client = TaggerClient(grpc_server[0], MODEL_NAME, version=1)
    client.predict(_waveforms(batch=1), signature="embed")
    request = grpc_server[1].requests[-1]
    assert request.model_spec.version.value == 1 and request.model_spec.signature_name == "embed"
    assert request.inputs["waveform"].dtype == tf.float32.as_datatype_enum
    assert client.rest_url().endswith(f"/v1/models/{MODEL_NAME}/versions/1:predict")


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_server_errors_become_clear_exceptions(protocol, grpc_server, rest_server):
    server = grpc_server[0] if protocol == "grpc" else rest_server
    with pytest.raises(ServingError, match="NOT_FOUND|404"):
        TaggerClient(server, "no_such_model", protocol=protocol).predict(_waveforms(batch=1))
    with pytest.raises(ServingError, match="INVALID_ARGUMENT|400"):
        TaggerClient(server, MODEL_NAME, protocol=protocol).predict(_waveforms(batch=1, seconds=0.5))


def test_bad_arguments():
    with pytest.raises(ValueError, match="protocol"):
        TaggerClient("localhost:1", MODEL_NAME, protocol="http2")
    client = TaggerClient("localhost:1", MODEL_NAME, protocol="rest")
    with pytest.raises(ValueError, match="signature"):
        client.predict(_waveforms(), signature="log_mel")
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        client.predict(np.zeros((1, 2, 3)))
