"""A minimal stand-in for TF Serving's Predict API (gRPC and REST), serving real SavedModels.

No TF Serving binary can be installed here. This serves the Predict API with
the real protos and the real exported SavedModels: it resolves the model name
and version the way TF Serving does (latest version unless one is named),
checks each request against the signature definition (input names, dtype,
rank), runs the signature and returns its outputs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.server
import json
import re
import threading

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.export import signatures as sig


class ServableNotFoundError(LookupError):
    """No such model or version."""


def find_model(models: dict, name: str, version: int | None):
    """The loaded SavedModel for `name` (and `version`, default the latest)."""
    versions = models.get(name)
    if not versions:
        raise ServableNotFoundError(f"Servable not found for request: Latest({name})")
    if version is None:
        return versions[max(versions)]
    if version not in versions:
        raise ServableNotFoundError(f"Servable not found for request: Specific({name}, {version})")
    return versions[version]


def check_and_run(loaded, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Runs a signature after checking the inputs against its definition."""
    if signature_name not in loaded.signatures:
        raise ValueError(f'Serving signature name: "{signature_name}" not found in signature def')
    signature = loaded.signatures[signature_name]
    specs = signature.structured_input_signature[1]
    if set(inputs) != set(specs):
        raise ValueError(f"inputs {sorted(inputs)} do not match the signature's {sorted(specs)}")
    for name, spec in specs.items():
        if inputs[name].dtype != spec.dtype.as_numpy_dtype or inputs[name].ndim != spec.shape.rank:
            raise ValueError(f"input {name}: {inputs[name].dtype}{inputs[name].shape} does not fit {spec}")
    return {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """The gRPC Predict method; keeps the requests it received."""

    def __init__(self, models: dict):
        self.models = models
        self.requests = []

    def Predict(self, request, context):  # noqa: N802 - the gRPC method name.
        self.requests.append(request)
        spec = request.model_spec
        try:
            loaded = find_model(self.models, spec.name, spec.version.value if spec.HasField("version") else None)
        except ServableNotFoundError as error:
            context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        try:
            outputs = check_and_run(loaded, spec.signature_name or sig.SERVING_DEFAULT, inputs)
        except (ValueError, KeyError, tf.errors.InvalidArgumentError) as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        response = predict_pb2.PredictResponse()
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response


@contextlib.contextmanager
def grpc_server(models: dict):
    """Serves `models` ({name: {version: loaded SavedModel}}); yields (`host:port`, service)."""
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
    service = PredictionService(models)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", service
    finally:
        server.stop(None)


_ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(/versions/(?P<version>\d+))?:predict$")


@contextlib.contextmanager
def rest_server(models: dict):
    """Serves `models` over TF Serving's REST predict API; yields `host:port`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server method name.
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            route = _ROUTE.match(self.path)
            if not route:
                return self._reply(404, {"error": f"Malformed request: POST {self.path}"})
            version = int(route["version"]) if route["version"] else None
            try:
                loaded = find_model(models, route["name"], version)
            except ServableNotFoundError as error:
                return self._reply(404, {"error": str(error)})
            inputs = {k: np.asarray(v, dtype=np.float32) for k, v in body["inputs"].items()}
            try:
                outputs = check_and_run(loaded, body.get("signature_name", sig.SERVING_DEFAULT), inputs)
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
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
