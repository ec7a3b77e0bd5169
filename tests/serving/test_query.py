"""`python -m serving.query` on real audio files, in-process and through a TF Serving stand-in."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import soundfile

from models.vocabularies import MTAT_TOP50_TAGS
from serving.retrieval.catalog_index import CatalogIndex
from tests.binaries import run_binary
from tests.conftest import REPO_ROOT
from tests.serving import tf_serving_standin


def _query(*flags):
    return run_binary("serving.query", *flags)


def test_audio_query_prints_json_results_and_a_tag_chart(tmp_path, demo_index, entries):
    query_entry = next(iter(entries.values()))
    chart = tmp_path / "tags.png"
    done = _query(
        f"--index_dir={demo_index[0]}",
        f"--audio={query_entry.uri}",
        "--k=5",
        "--format=json",
        f"--tags_png={chart}",
        "--tag_threshold=0.0",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    ids = [r["track_id"] for r in result["recommendations"]]
    assert len(ids) == 5 == result["found"] and len(set(ids)) == 5
    assert query_entry.track_id not in ids  # The same file is an exact duplicate of the query.
    for r in result["recommendations"]:
        assert (r["artist"], r["title"], r["path"]) == tuple(
            getattr(entries[r["track_id"]], f) for f in ("artist", "title", "path")
        )
        assert r["explanation"].startswith(f"similarity {r['score']:.3f}")
    scores = [r["score"] for r in result["recommendations"]]
    assert scores == sorted(scores, reverse=True)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_track_query_prints_a_table(demo_index, entries):
    """The binary's own process (the other tests run its `main` in theirs)."""
    track_id = sorted(entries)[3]
    command = [
        "-m",
        "serving.query",
        f"--index_dir={demo_index[0]}",
        f"--track_id={track_id}",
        "--k=4",
        "--max_per_artist=1",
    ]
    done = subprocess.run([sys.executable, *command], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == f"query: track {track_id}"
    rows = [line for line in lines if line[:3].strip().isdigit()]
    artists = [entries[row.split()[-1]].artist for row in rows]
    assert 1 <= len(rows) <= 4 and len(set(artists)) == len(artists)
    assert track_id not in [row.split()[-1] for row in rows]


def test_errors_name_the_problem(tmp_path, demo_index):
    not_audio = tmp_path / "song.mp3"
    not_audio.write_text("not audio at all")
    done = _query(f"--index_dir={demo_index[0]}", f"--audio={not_audio}")
    assert done.returncode != 0 and str(not_audio) in done.stderr and "decode_error" in done.stderr
    done = _query(f"--index_dir={demo_index[0]}", "--track_id=no-such-track")
    assert done.returncode != 0 and "unknown track id 'no-such-track'" in done.stderr
    silence = tmp_path / "silence.wav"
    soundfile.write(silence, np.zeros(48000, np.float32), 16000)  # Digital silence: the catalog's checks refuse it.
    done = _query(f"--index_dir={demo_index[0]}", f"--audio={silence}")
    assert done.returncode != 0 and f"{silence}: silent" in done.stderr and "dBFS" in done.stderr
    renamed = _query(f"--index_dir={demo_index[0]}", "--track_id=x", "--export_dir=/elsewhere")
    assert renamed.returncode != 0 and "--export_dir was renamed --export_base" in renamed.stderr
    assert "Traceback" not in renamed.stderr


def test_through_tf_serving_gives_the_in_process_results(demo_index, entries, standin_models):
    query_entry = list(entries.values())[7]
    flags = [f"--index_dir={demo_index[0]}", f"--audio={query_entry.uri}", "--k=6", "--format=json", "--notag_filter"]
    local = _query(*flags)
    assert local.returncode == 0, local.stderr[-3000:]
    with tf_serving_standin.grpc_server(standin_models) as (address, service):
        remote = _query(*flags, f"--server={address}")
        assert remote.returncode == 0, remote.stderr[-3000:]
        requested = {
            (r.model_spec.name, r.model_spec.version.value, r.model_spec.signature_name) for r in service.requests
        }
    assert requested == {("short_chunk_res", 1, "embed"), ("crnn", 1, "tags")}
    local_results, remote_results = json.loads(local.stdout), json.loads(remote.stdout)
    assert [r["track_id"] for r in remote_results["recommendations"]] == [
        r["track_id"] for r in local_results["recommendations"]
    ]
    np.testing.assert_allclose(
        [r["score"] for r in remote_results["recommendations"]],
        [r["score"] for r in local_results["recommendations"]],
        atol=1e-5,
    )


def test_pretrained_index_names_its_models_and_tags_with_music_words(pretrained_index):
    done = _query(f"--index_dir={pretrained_index}", "--track_id=starfighter--death", "--k=5", "--tag_threshold=0.3")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tags by: mtat_crnn v1 (crnn, trained on MagnaTagATune, top-50 tags" in done.stdout
    assert "ranked by: msd_musicnn v1 (musicnn, trained on Million Song Dataset, top-50 Last.fm tags)" in done.stdout
    top_line = next(line for line in done.stdout.splitlines() if line.startswith("query's top tags: "))
    shown = [part.rsplit(" ", 1)[0] for part in top_line.removeprefix("query's top tags: ").split(", ")]
    assert len(shown) == 5 and set(shown) <= set(MTAT_TOP50_TAGS)
    done = _query(f"--index_dir={pretrained_index}", "--track_id=starfighter--death", "--k=5", "--format=json")
    result = json.loads(done.stdout)
    assert result["models"]["ranking"].startswith("msd_musicnn v1") and result["models"]["tags"].startswith("mtat_crnn")
    assert [t["tag"] for t in result["query_top_tags"]] == shown
    index = CatalogIndex.load(str(pretrained_index))
    assert tuple(index.vocabulary) == MTAT_TOP50_TAGS
    # A recording of guitar and piano music: the published CRNN's leading tags are instrument and style words.
    probabilities = index.tag_probabilities[index.row("starfighter--death")]
    top = [index.vocabulary[i] for i in np.argsort(-probabilities)[:3]]
    assert set(top) <= {"guitar", "classical", "piano", "slow", "strings", "soft", "ambient", "harpsichord", "violin"}
