"""The gRPC and REST client against the exported SavedModel's real signatures.

No TF Serving binary can be installed here; `tf_serving_standin` serves the
Predict API with the real protos and the real SavedModel, checking each
request against the signature definition the way TF Serving does.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from serving.embedding.tf_serving_client import Prediction, ServingError, TaggerClient
from tests.serving import tf_serving_standin

MODEL_NAME = "short_chunk_res"


@pytest.fixture(scope="module")
def loaded(trained):
    return tf.saved_model.load(trained[3])


@pytest.fixture(scope="module")
def grpc_server(loaded):
    with tf_serving_standin.grpc_server({MODEL_NAME: {1: loaded}}) as server:
        yield server


@pytest.fixture(scope="module")
def rest_server(loaded):
    with tf_serving_standin.rest_server({MODEL_NAME: {1: loaded}}) as server:
        yield server


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
    with pytest.raises(ServingError, match="NOT_FOUND|404"):
        TaggerClient(server, MODEL_NAME, protocol=protocol, version=2).predict(_waveforms(batch=1))
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
