"""Embedding query audio with the models an index was built with, in-process or through TF Serving.

    embedder = LocalEmbedder(index.embedding_model, index.tag_model)
    embedder = RemoteEmbedder("localhost:8500", index.embedding_model, index.tag_model)
    embedding, tag_probabilities = embedder.features(waveform)

Both pin the exact model versions recorded in the index: in-process, the
SavedModel's checksum is checked; through TF Serving, requests name the
version, so a server without it refuses instead of answering with another.
"""

from __future__ import annotations

import os

import numpy as np

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


class LocalEmbedder:
    """Runs the index's models in this process.

    Args:
        embedding_model: The ranking model.
        tag_model: The tag model, or None.
        export_base: The serving base path of the exports, if not where the index recorded them.
    """

    def __init__(self, embedding_model: ModelRef, tag_model: ModelRef | None, export_base: str | None = None):
        self.sample_rate = embedding_model.sample_rate
        self._embedding = LoadedModel(locate(embedding_model, export_base))
        self._tags = LoadedModel(locate(tag_model, export_base)) if tag_model else None

    def features(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The embedding `[dim]` and tag probabilities `[num_tags]` (or None) of a mono waveform."""
        embedding = self._embedding.from_waveform(waveform)[sig.EMBEDDING_OUTPUT]
        tags = self._tags.from_waveform(waveform)[sig.TAGS_OUTPUT] if self._tags else None
        return embedding, tags


class RemoteEmbedder:
    """Asks TF Serving, pinning the index's model versions.

    Args:
        server: `host:port` of TF Serving's gRPC (or REST) endpoint.
        embedding_model: The ranking model (its name and version are requested).
        tag_model: The tag model, or None.
        protocol: `grpc` or `rest`.
        timeout_s: Per-request deadline.
    """

    def __init__(
        self,
        server: str,
        embedding_model: ModelRef,
        tag_model: ModelRef | None,
        protocol: str = "grpc",
        timeout_s: float = 30.0,
    ):
        self.sample_rate = embedding_model.sample_rate
        self._embedding = TaggerClient(server, embedding_model.name, protocol, embedding_model.version, timeout_s)
        self._tags = TaggerClient(server, tag_model.name, protocol, tag_model.version, timeout_s) if tag_model else None

    def features(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """As `LocalEmbedder.features`, computed by the server."""
        embedding = self._embedding.predict(waveform, signature=sig.EMBED_SIGNATURE).embedding[0]
        tags = self._tags.predict(waveform, signature=sig.TAGS_SIGNATURE).tags[0] if self._tags else None
        return embedding, tags


def make_embedder(
    embedding_model: ModelRef,
    tag_model: ModelRef | None,
    server: str | None = None,
    protocol: str = "grpc",
    export_base: str | None = None,
):
    """An index's models: through TF Serving at `server` if given, else in this process (from `export_base`)."""
    if server:
        return RemoteEmbedder(server, embedding_model, tag_model, protocol)
    return LocalEmbedder(embedding_model, tag_model, export_base)
