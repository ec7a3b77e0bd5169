"""Request parameters and response bodies of the web service (they make its OpenAPI schema)."""

from __future__ import annotations

from typing import Literal

import pydantic
from pydantic import Field

MAX_K = 100
MAX_PAGE = 500
TOP_TAGS = 10


class RecommendParams(pydantic.BaseModel):
    """How to recommend: the query parameters of `POST /recommend` and `GET /tracks/{track_id}/similar`."""

    model_config = pydantic.ConfigDict(extra="forbid")

    k: int = Field(10, ge=1, le=MAX_K, description="Number of recommendations.")
    tag_filter: bool = Field(
        False,
        description="Stage 1: keep only tracks sharing a confident tag with the query (off by default: on unseen "
        "music it lowered precision; the tags explain the answers either way).",
    )
    tag_threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="Stage 1's tag sets: minimum tag probability (default: the service's)."
    )
    tag_top_n: int | None = Field(
        None,
        ge=1,
        le=MAX_K,
        description="Stage 1's tag sets: at most this many tags per track (default: the service's).",
    )
    embedding_rank: bool = Field(True, description="Rank by embedding similarity (else by tag similarity).")
    query_expansion: int | None = Field(
        None,
        ge=0,
        le=MAX_K,
        description="The query's nearest catalog tracks averaged into it, weighted by cosine cubed (0: none; "
        "default: the service's).",
    )
    max_per_artist: int | None = Field(None, ge=1, le=MAX_K, description="At most this many results per artist.")


class TrackPageParams(pydantic.BaseModel):
    """The query parameters of `GET /tracks`."""

    model_config = pydantic.ConfigDict(extra="forbid")

    limit: int = Field(50, ge=1, le=MAX_PAGE, description="Tracks per page.")
    offset: int = Field(0, ge=0, description="Tracks to skip.")
    q: str | None = Field(
        None, max_length=200, description="Only tracks whose id, artist, title or album contains this (any case)."
    )


class TagProbability(pydantic.BaseModel):
    tag: str
    probability: float


class SharedTag(pydantic.BaseModel):
    tag: str
    query_probability: float
    track_probability: float


class Track(pydantic.BaseModel):
    """A catalog track."""

    track_id: str
    artist: str
    title: str
    album: str
    duration_s: float
    audio_url: str | None = Field(description="Where to play it (`/tracks/{track_id}/audio`); null if not served.")


class Recommendation(Track):
    rank: int
    score: float = Field(description="Cosine similarity of the embeddings (of the tag probabilities without stage 2).")
    shared_tags: list[SharedTag]
    explanation: str


class QueryInfo(pydantic.BaseModel):
    """What the recommendations are for."""

    kind: Literal["upload", "track"]
    track_id: str | None = None
    filename: str | None = None
    duration_s: float | None = None
    top_tags: list[TagProbability] = Field(description=f"The query's {TOP_TAGS} most probable tags, best first.")


class MadeBy(pydantic.BaseModel):
    tags: str | None = Field(description="The exported model that tagged the query (stage 1), or null.")
    ranking: str = Field(description="What ranked the results: the embedding model (stage 2), or the tag model.")


class RecommendResponse(pydantic.BaseModel):
    models: MadeBy
    query: QueryInfo
    k: int
    found: int
    query_tags: list[TagProbability] = Field(description="The query's tag set used by stage 1.")
    num_candidates: int
    notes: list[str]
    recommendations: list[Recommendation]
    timings_ms: dict[str, float] = Field(description="Time per stage: decode, embed, search.")
    map_position: list[float] | None = Field(
        None,
        description="The query's point on the catalog map (`GET /map`), `[x, y]` in [0, 1]: a catalog track's own, "
        "an upload's among its answers; null when the index has no map.",
    )


class CatalogMap(pydantic.BaseModel):
    """Every catalog track's point on the map (2-D, similar tracks near each other), columns of equal length."""

    method: str = Field(description="How the points were computed (`tsne` or `pca`).")
    tags: list[str] = Field(description="The tag model's vocabulary: what `top_tag` indexes.")
    track_ids: list[str]
    x: list[float] = Field(description="In [0, 1].")
    y: list[float] = Field(description="In [0, 1].")
    top_tag: list[int] = Field(
        description="Each track's most probable tag (an index into `tags`; -1 without a tag model)."
    )
    labels: list[str] = Field(description="Each track's `title — artist`, for hover text.")


class TrackPage(pydantic.BaseModel):
    total: int = Field(description="Tracks matching `q` (all tracks without it).")
    offset: int
    limit: int
    tracks: list[Track]


class ModelInfo(pydantic.BaseModel):
    name: str
    version: int
    checksum: str
    architecture: str


class RankingModelInfo(ModelInfo):
    weight: float = Field(description="Its weight in the combined embedding (1 for a single model).")


class Health(pydantic.BaseModel):
    status: Literal["ok"]
    tracks: int
    searcher: str
    embedding_models: list[RankingModelInfo] = Field(description="The ranking model(s), in combination order.")
    tag_model: ModelInfo | None
    embedder: str = Field(description="`in-process` or `tf-serving HOST:PORT (PROTOCOL)`.")
    audio_served: bool
    max_upload_bytes: int
    max_duration_s: float
