"""Embedding query audio with the models an index was built with, in-process or through TF Serving.

    embedder = LocalEmbedder(index.embedding_models, index.tag_model)
    embedder = RemoteEmbedder("localhost:8500", index.embedding_models, index.tag_model)
    embedding, tag_probabilities = embedder.features(waveform)

With several ranking models (an ensemble, `serving.embedding.ensemble`), each
model embeds the waveform (concurrently, one thread per model: TensorFlow
and gRPC release the GIL) and the parts are combined exactly as the index
combined them; a model that is both a ranking and the tag model runs once.

Both pin the exact model versions recorded in the index: in-process, the
SavedModel's checksum is checked; through TF Serving, requests name the
version, so a server without it refuses instead of answering with another.
"""

from __future__ import annotations

import concurrent.futures
import os

import numpy as np

from serving.embedding.ensemble import EmbeddingModels
from serving.embedding.index_models import IndexModels
from serving.embedding.tf_serving_client import TaggerClient
from serving.export import signatures as sig
from serving.export.exported_model import LoadedModel, ModelRef, resolve


def locate(ref: ModelRef, export_base: str | None) -> ModelRef:
    """The model `ref` names, found where it was exported or under `export_base`.

    Args:
        ref: A model recorded in an index.
        export_base: A serving base path holding `<name>/<version>/` (when the
            exports moved since the index was built), or None.

    Raises:
        serving.export.exported_model.ModelMismatchError: The model found there has
            another checksum.
        FileNotFoundError: It is not there.
    """
    path = os.path.join(export_base, ref.name, str(ref.version)) if export_base else ref.path
    found = resolve(path)
    ref.check_same(found, ref.name)
    return found


class _Embedder:
    """Runs each distinct model of an index once per query, concurrently, and combines the ranking parts."""

    def __init__(self, embedding_models: EmbeddingModels, tag_model: ModelRef | None, connect):
        self.models = IndexModels(embedding_models, tag_model)
        self._connections = [connect(ref) for ref in self.models.distinct]
        self._signatures = [self.models.signature(position) for position in range(len(self._connections))]
        self._pool = (
            concurrent.futures.ThreadPoolExecutor(len(self._connections), thread_name_prefix="embedder")
            if len(self._connections) > 1
            else None
        )

    @property
    def embedding_models(self) -> EmbeddingModels:
        return self.models.embedding_models

    @property
    def sample_rate(self) -> int:
        return self.models.sample_rate

    def _outputs(self, model, signature: str, waveform: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def features(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The combined embedding `[dim]` and tag probabilities `[num_tags]` (or None) of a mono waveform."""
        if self._pool is None:
            outputs = [self._outputs(self._connections[0], self._signatures[0], waveform)]
        else:
            count = len(self._connections)
            outputs = list(self._pool.map(self._outputs, self._connections, self._signatures, [waveform] * count))
        return self.models.combine(dict(enumerate(outputs)))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)


class LocalEmbedder(_Embedder):
    """Runs the index's models in this process.

    Args:
        embedding_models: The ranking model(s), with their weights.
        tag_model: The tag model, or None.
        export_base: The serving base path of the exports, if not where the index recorded them.
    """

    def __init__(self, embedding_models: EmbeddingModels, tag_model: ModelRef | None, export_base: str | None = None):
        super().__init__(embedding_models, tag_model, lambda ref: LoadedModel(locate(ref, export_base)))

    def _outputs(self, model: LoadedModel, signature: str, waveform: np.ndarray) -> dict[str, np.ndarray]:
        return model.from_waveform(waveform)  # Both outputs: the graph computes them together anyway.


class RemoteEmbedder(_Embedder):
    """Asks TF Serving, pinning the index's model versions.

    Args:
        server: `host:port` of TF Serving's gRPC (or REST) endpoint.
        embedding_models: The ranking model(s) (their names and versions are requested).
        tag_model: The tag model, or None.
        protocol: `grpc` or `rest`.
        timeout_s: Per-request deadline.
    """

    def __init__(
        self,
        server: str,
        embedding_models: EmbeddingModels,
        tag_model: ModelRef | None,
        protocol: str = "grpc",
        timeout_s: float = 30.0,
    ):
        super().__init__(
            embedding_models,
            tag_model,
            lambda ref: TaggerClient(server, ref.name, protocol, ref.version, timeout_s),
        )

    def _outputs(self, client: TaggerClient, signature: str, waveform: np.ndarray) -> dict[str, np.ndarray]:
        prediction = client.predict(waveform, signature=signature)
        outputs = {sig.EMBEDDING_OUTPUT: prediction.embedding, sig.TAGS_OUTPUT: prediction.tags}
        return {name: value[0] for name, value in outputs.items() if value is not None}


def make_embedder(
    embedding_models: EmbeddingModels,
    tag_model: ModelRef | None,
    server: str | None = None,
    protocol: str = "grpc",
    export_base: str | None = None,
):
    """An index's models: through TF Serving at `server` if given, else in this process (from `export_base`)."""
    if server:
        return RemoteEmbedder(server, embedding_models, tag_model, protocol)
    return LocalEmbedder(embedding_models, tag_model, export_base)
