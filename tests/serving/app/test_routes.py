"""`serving.app.routes`: health and schema, tracks, similar tracks, bad parameters, `listen`, a schema-driven fuzz."""

from __future__ import annotations

import asyncio
import socket

import httpx
import hypothesis
import numpy as np
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from serving.app.child_process import app_process
from serving.app.routes import listen
from serving.retrieval.recommender import QueryExpansion, Recommender, TagFilter
from serving.retrieval.sharded_index import ShardedIndex
from tests.serving.app.conftest import MAX_UPLOAD_MB, _error


def test_health_and_schema(server, client, model_refs):
    assert server.url.startswith("http://127.0.0.1:")  # The default address.
    health = client.get("/healthz").raise_for_status().json()
    assert health["status"] == "ok" and health["tracks"] == 16 and health["embedder"] == "in-process"
    assert health["audio_served"] and health["max_upload_bytes"] == MAX_UPLOAD_MB * 2**20
    assert [(m["checksum"], m["weight"]) for m in health["embedding_models"]] == [
        (model_refs["embedding"].checksum, 1.0)
    ]
    assert health["tag_model"]["checksum"] == model_refs["tag"].checksum
    paths = client.get("/openapi.json").raise_for_status().json()["paths"]
    assert {"/recommend", "/tracks", "/tracks/{track_id}/similar", "/tracks/{track_id}/audio", "/healthz"} <= set(paths)
    assert "multipart/form-data" in paths["/recommend"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 404  # Swagger UI would load from a CDN.


@pytest.mark.parametrize(
    "params",
    [
        {"k": 4},
        {"k": 6, "max_per_artist": 1, "tag_threshold": 0.0, "tag_top_n": 2, "tag_filter": "true"},
        {"k": 3, "tag_filter": "true", "query_expansion": 0},
        {"k": 5, "embedding_rank": "false", "tag_threshold": 0.2, "tag_filter": "true"},
        {"k": 5, "embedding_rank": "false", "query_expansion": 7},
    ],
)
def test_similar_tracks_are_the_recommenders(client, catalog, params):
    recommender = Recommender(catalog)  # The service's defaults: no tag filter, query expansion (3, 3).
    track_id = catalog.tracks[9].track_id
    body = client.get(f"/tracks/{track_id}/similar", params=params).raise_for_status().json()
    tag_filter = None
    if params.get("tag_filter") == "true":
        tag_filter = TagFilter(params.get("tag_threshold", 0.5), params.get("tag_top_n", 3))
    expansion = params.get("query_expansion", 3)
    expected = recommender.recommend(
        recommender.query_for_track(track_id),
        params["k"],
        tag_filter=tag_filter,
        rank_by_embedding=params.get("embedding_rank") != "false",
        max_per_artist=params.get("max_per_artist"),
        expansion=QueryExpansion(expansion) if expansion else None,
    )
    assert [r["track_id"] for r in body["recommendations"]] == [r.track.track_id for r in expected.recommendations]
    np.testing.assert_allclose(
        [r["score"] for r in body["recommendations"]], [r.score for r in expected.recommendations]
    )
    assert body["query_tags"] == [{"tag": t, "probability": p} for t, p in expected.query_tags]
    assert body["notes"] == list(expected.notes) and body["query"]["track_id"] == track_id
    for r in body["recommendations"]:
        track = catalog.track(r["track_id"])
        assert (r["artist"], r["title"], r["album"]) == (track.artist, track.title, track.album)


def test_the_map_places_every_track_and_a_query_at_its_point(client, catalog):
    body = client.get("/map").raise_for_status().json()
    count = len(catalog)
    assert body["method"] == "tsne" and body["tags"] == list(catalog.vocabulary)
    assert sorted(body["track_ids"]) == sorted(t.track_id for t in catalog.tracks)
    assert all(len(body[column]) == count for column in ("x", "y", "top_tag", "labels"))
    assert all(0.0 <= v <= 1.0 for v in body["x"] + body["y"])
    rows = [catalog.row(track_id) for track_id in body["track_ids"]]
    assert body["top_tag"] == [int(np.argmax(catalog.tag_probabilities[row])) for row in rows]
    track = catalog.tracks[rows[4]]
    assert body["labels"][4] == " — ".join(p for p in (track.title or track.track_id, track.artist) if p)
    similar = client.get(f"/tracks/{body['track_ids'][4]}/similar", params={"k": 3}).raise_for_status().json()
    assert similar["map_position"] == pytest.approx([body["x"][4], body["y"][4]], abs=1e-4)


def test_tracks_are_listed_by_page_and_filtered(client, catalog):
    ids = []
    for offset in range(0, 20, 6):
        page = client.get("/tracks", params={"limit": 6, "offset": offset}).raise_for_status().json()
        assert page["total"] == 16 and page["offset"] == offset and page["limit"] == 6
        ids += [t["track_id"] for t in page["tracks"]]
    assert ids == [t.track_id for t in catalog.tracks]
    found = client.get("/tracks", params={"q": "STARFIGHTER"}).raise_for_status().json()
    assert found["total"] == 4 and all(t["track_id"].startswith("starfighter--") for t in found["tracks"])
    assert client.get("/tracks", params={"q": "no such thing"}).json() == {
        "total": 0,
        "offset": 0,
        "limit": 50,
        "tracks": [],
    }


def test_connections_do_not_wait_for_delayed_acks():
    """Accepted connections have Nagle's algorithm off, as uvicorn accepts them (asyncio, on `listen`'s socket)."""

    async def accepted_nodelay() -> int:
        sock = listen("127.0.0.1", 0)
        accepted = asyncio.get_running_loop().create_future()

        class Accept(asyncio.Protocol):
            def connection_made(self, transport):
                accepted.set_result(
                    transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                )
                transport.close()

        server = await asyncio.get_running_loop().create_server(Accept, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            value = await asyncio.wait_for(accepted, 30)
            writer.close()
        return value

    assert asyncio.run(accepted_nodelay()) != 0


@pytest.mark.parametrize(
    "method, url, status, reason",
    [
        ("GET", "/tracks/starfighter--death/similar?k=0", 422, "invalid_parameter"),
        ("GET", "/tracks/starfighter--death/similar?k=ten", 422, "invalid_parameter"),
        ("GET", "/tracks/starfighter--death/similar?k=1000", 422, "invalid_parameter"),
        ("GET", "/tracks/starfighter--death/similar?tag_threshold=nan", 422, "invalid_parameter"),
        ("GET", "/tracks/starfighter--death/similar?tag_threshold=2", 422, "invalid_parameter"),
        ("GET", "/tracks/starfighter--death/similar?topk=3", 422, "invalid_parameter"),
        ("GET", "/tracks/starfighter--death/similar?query_expansion=-1", 422, "invalid_parameter"),
        ("GET", "/tracks/no-such-track/similar", 404, "unknown_track"),
        ("POST", "/recommend?max_per_artist=-1", 422, "invalid_parameter"),
        ("GET", "/tracks?limit=0", 422, "invalid_parameter"),
        ("GET", "/tracks?offset=-1", 422, "invalid_parameter"),
        ("GET", "/no/such/route", 404, "not_found"),
        ("DELETE", "/recommend", 405, "method_not_allowed"),
    ],
)
def test_malformed_parameters_are_refused(client, method, url, status, reason):
    status_got, reason_got, detail = _error(client.request(method, url))
    assert (status_got, reason_got) == (status, reason) and detail


# Schema-driven fuzz: no input finds a 5xx, and every answer is what the schema documents.

FUZZED = [
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/map"),
    ("GET", "/tracks"),
    ("GET", "/tracks/{track_id}/similar"),
    ("GET", "/tracks/{track_id}/audio"),
    ("POST", "/recommend"),
]
FUZZ_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_url(server.url + "/openapi.json")


def test_every_operation_is_fuzzed(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert sorted((o.method.upper(), o.path) for o in operations) == sorted(FUZZED)


@pytest.mark.parametrize("method, path", FUZZED)
def test_fuzzing_the_api_finds_no_server_error(api_schema, method, path):
    """Schemathesis cases from the OpenAPI schema, valid and invalid (for track routes also on a real track)."""
    operation = api_schema[path][method]
    strategies = [operation.as_strategy(mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    if "{track_id}" in path:
        strategies.append(operation.as_strategy(path_parameters={"track_id": "starfighter--death"}))

    @hypothesis.settings(
        max_examples=60,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=hypothesis.strategies.one_of(strategies))
    def call(case):
        case.call_and_validate(checks=FUZZ_CHECKS, timeout=60)

    call()


def test_a_sharded_index_is_served_like_the_whole_one(client, catalog, demo_catalog, tmp_path):
    """The app reads the shards of an index as one: the same health, similar tracks and upload answers."""
    sharded_dir = tmp_path / "sharded"
    ShardedIndex.build(
        catalog.tracks,
        catalog.model_embeddings,
        catalog.tag_probabilities,
        catalog.embedding_models,
        catalog.tag_model,
        num_shards=3,
    ).save(str(sharded_dir))
    track_id = catalog.tracks[9].track_id
    audio = (demo_catalog.parent / catalog.track(track_id).path).read_bytes()
    requests = [
        ("GET", f"/tracks/{track_id}/similar", {"k": 6, "max_per_artist": 1}),
        ("GET", f"/tracks/{track_id}/similar", {"k": 4, "tag_filter": "true", "tag_threshold": 0.2}),
    ]

    def answers(http) -> list[dict]:
        bodies = [
            http.request(method, path, params=params).raise_for_status().json() for method, path, params in requests
        ]
        # An upload of a catalog track: its copy in whichever shard is left out of the answer.
        uploaded = http.post("/recommend", params={"k": 5}, files={"audio": ("song.mp3", audio, "audio/mpeg")})
        return [
            {key: body[key] for key in ("recommendations", "query_tags", "num_candidates", "notes")}
            for body in [*bodies, uploaded.raise_for_status().json()]
        ]

    with app_process(str(sharded_dir), None, str(tmp_path / "app.log"), ["--noaccess_log"]) as url:
        with httpx.Client(base_url=url, timeout=120.0) as sharded_client:
            assert sharded_client.get("/healthz").raise_for_status().json()["tracks"] == len(catalog)
            no_map = sharded_client.get("/map")  # Built here without `build_index`: no map stored with it.
            assert no_map.status_code == 404 and no_map.json()["error"]["reason"] == "no_map"
            served = answers(sharded_client)
    whole = answers(client)
    for got, expected in zip(served, whole, strict=True):
        assert [r["track_id"] for r in got["recommendations"]] == [r["track_id"] for r in expected["recommendations"]]
        np.testing.assert_allclose(
            [r["score"] for r in got["recommendations"]], [r["score"] for r in expected["recommendations"]], atol=1e-6
        )
        assert {k: got[k] for k in ("query_tags", "num_candidates", "notes")} == {
            k: expected[k] for k in ("query_tags", "num_candidates", "notes")
        }
    assert track_id not in [r["track_id"] for r in served[-1]["recommendations"]]
