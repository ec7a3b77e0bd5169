"""A client for the exported taggers behind TF Serving, over gRPC or REST.

    client = TaggerClient("localhost:8500", "short_chunk_res")            # gRPC
    client = TaggerClient("localhost:8501", "short_chunk_res", protocol="rest")
    result = client.predict(waveforms)  # float32 [batch, samples] at 16 kHz
    result.tags, result.embedding

Requests name the signature's input (`waveform`) and read its outputs
(`tags`, `embedding`) exactly as `serving.export.signatures` names them.
"""

from __future__ import annotations

import dataclasses
import json

import grpc
import numpy as np
import requests
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

from serving.export import signatures as sig

MAX_MESSAGE_BYTES = 256 << 20  # A 10-minute batch of 16 kHz float32 audio is ~38 MB per track.


class ServingError(RuntimeError):
    """TF Serving refused or failed a request."""


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Outputs for a batch of waveforms (None where the signature has none)."""

    tags: np.ndarray | None
    embedding: np.ndarray | None


class TaggerClient:
    """Calls a tagger model on a TF Serving server.

    Args:
        server: `host:port` of the gRPC (default 8500) or REST (8501) endpoint.
        model_name: The model's name in the server's model config.
        protocol: `grpc` or `rest`.
        version: A model version; None lets the server pick the latest.
        timeout_s: Per-request deadline.
    """

    def __init__(
        self,
        server: str,
        model_name: str,
        protocol: str = "grpc",
        version: int | None = None,
        timeout_s: float = 30.0,
    ):
        if protocol not in ("grpc", "rest"):
            raise ValueError(f"protocol must be grpc or rest, got {protocol!r}")
        self.server = server
        self.model_name = model_name
        self.protocol = protocol
        self.version = version
        self.timeout_s = timeout_s
        self._stub = None
        if protocol == "grpc":
            options = [
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ]
            self._channel = grpc.insecure_channel(server, options=options)
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def predict(self, waveforms: np.ndarray, signature: str = sig.SERVING_DEFAULT) -> Prediction:
        """Tags and/or embeddings of mono 16 kHz waveforms `[batch, samples]` (≥ 1 s, equal lengths)."""
        if signature not in sig.WAVEFORM_SIGNATURES:
            raise ValueError(f"signature must be one of {list(sig.WAVEFORM_SIGNATURES)}, got {signature!r}")
        waveforms = np.asarray(waveforms, dtype=np.float32)
        if waveforms.ndim == 1:
            waveforms = waveforms[np.newaxis]
        if waveforms.ndim != 2:
            raise ValueError(f"waveforms must be [batch, samples], got shape {waveforms.shape}")
        outputs = self._predict_grpc(waveforms, signature) if self._stub else self._predict_rest(waveforms, signature)
        return Prediction(tags=outputs.get(sig.TAGS_OUTPUT), embedding=outputs.get(sig.EMBEDDING_OUTPUT))

    def grpc_request(self, waveforms: np.ndarray, signature: str) -> predict_pb2.PredictRequest:
        """The PredictRequest sent over gRPC."""
        spec = model_pb2.ModelSpec(name=self.model_name, signature_name=signature)
        if self.version is not None:
            spec.version.value = self.version
        request = predict_pb2.PredictRequest(model_spec=spec)
        request.inputs[sig.WAVEFORM_INPUT].CopyFrom(tf.make_tensor_proto(waveforms, dtype=tf.float32))
        return request

    def _predict_grpc(self, waveforms, signature) -> dict[str, np.ndarray]:
        try:
            response = self._stub.Predict(self.grpc_request(waveforms, signature), timeout=self.timeout_s)
        except grpc.RpcError as error:
            raise ServingError(f"{self.server} {self.model_name}: {error.code().name}: {error.details()}") from error
        return {name: tf.make_ndarray(response.outputs[name]) for name in sig.OUTPUTS[signature]}

    def rest_url(self) -> str:
        version = f"/versions/{self.version}" if self.version is not None else ""
        return f"http://{self.server}/v1/models/{self.model_name}{version}:predict"

    def rest_body(self, waveforms: np.ndarray, signature: str) -> dict:
        """The JSON body of the REST predict call (columnar `inputs` format)."""
        return {"signature_name": signature, "inputs": {sig.WAVEFORM_INPUT: waveforms.tolist()}}

    def _predict_rest(self, waveforms, signature) -> dict[str, np.ndarray]:
        try:
            response = requests.post(
                self.rest_url(), data=json.dumps(self.rest_body(waveforms, signature)), timeout=self.timeout_s
            )
        except requests.RequestException as error:
            raise ServingError(f"{self.rest_url()}: {error}") from error
        if response.status_code != 200:
            raise ServingError(f"{self.rest_url()}: HTTP {response.status_code}: {response.text[:500]}")
        outputs = response.json()["outputs"]
        if not isinstance(outputs, dict):  # A single-output signature returns the bare value.
            outputs = {sig.OUTPUTS[signature][0]: outputs}
        return {name: np.asarray(outputs[name], dtype=np.float32) for name in sig.OUTPUTS[signature]}
