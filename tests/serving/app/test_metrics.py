"""`serving.app.metrics`: the Prometheus metrics count requests and name the model versions."""

from __future__ import annotations

import http.client

from prometheus_client.parser import text_string_to_metric_families

from tests.serving.app.conftest import _upload


def _samples(client) -> dict:
    families = text_string_to_metric_families(client.get("/metrics").raise_for_status().text)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples}


def test_metrics_count_requests_and_name_the_versions(client, model_refs):
    def value(samples, metric, /, **labels):
        return samples.get((metric, tuple(sorted(labels.items()))), 0.0)

    similar = {"method": "GET", "route": "/tracks/{track_id}/similar"}
    before = _samples(client)
    client.get("/tracks/starfighter--death/similar").raise_for_status()
    client.get("/tracks/nope/similar")
    _upload(client, "noise.bin", b"\x01\x02" * 1000)
    after = _samples(client)
    total = "recommender_http_requests_total"
    assert value(after, total, **similar, status="200") == value(before, total, **similar, status="200") + 1
    assert value(after, total, **similar, status="404") == value(before, total, **similar, status="404") + 1
    recommend = {"method": "POST", "route": "/recommend", "status": "415"}
    assert value(after, total, **recommend) == value(before, total, **recommend) + 1
    count = "recommender_http_request_duration_seconds_count"
    assert value(after, count, **similar) == value(before, count, **similar) + 2
    for stage in ("search", "decode"):
        stage_count = "recommender_stage_duration_seconds_count"
        assert value(after, stage_count, stage=stage) == value(before, stage_count, stage=stage) + 1
    for role, ref in model_refs.items():
        labels = {"role": role, "name": ref.name, "version": str(ref.version), "checksum": ref.checksum}
        assert value(after, "recommender_model_info", **labels, architecture=ref.model_name) == 1
    assert value(after, "recommender_index_tracks") == 16
    assert any(name == "recommender_index_info" and dict(labels)["searcher"] for name, labels in after)


def test_made_up_methods_are_counted_as_other_not_as_labels(client, server):
    """3,000 made-up methods once grew /metrics to 6 MB, a label each; the labels are a closed set."""
    for number in range(40):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request(f"BREW{number}", "/healthz")
        connection.getresponse().read()
        connection.close()
    text = client.get("/metrics").raise_for_status().text
    assert "BREW" not in text
    methods = {
        labels["method"]
        for (name, labels_items) in _samples(client)
        for labels in [dict(labels_items)]
        if "method" in labels
    }
    assert "other" in methods and methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
