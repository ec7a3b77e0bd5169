"""benchmarks.app_load: its load generator against the real web app over the demo index."""

from __future__ import annotations

from benchmarks import app_load
from serving.app.child_process import app_process
from serving.retrieval.catalog_index import CatalogIndex
from tests.conftest import DEMO_DIR


def test_a_short_load_run_counts_both_endpoints_and_no_errors(demo_index, demo_audio_files, tmp_path):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    flags = ["--noaccess_log", f"--upload_dir={uploads}"]
    track_ids = [track.track_id for track in CatalogIndex.load(str(demo_index[0])).tracks]
    files = [str(path) for path in demo_audio_files[:4]]
    with app_process(str(demo_index[0]), str(DEMO_DIR), str(tmp_path / "app.log"), flags) as url:
        result = app_load.run_load(url, 6, 2, 4.0, files, track_ids, k=5)
    assert result.error_count == 0, result.errors
    assert result.count(app_load.SIMILAR) > 0 and result.count(app_load.RECOMMEND) > 0
    assert result.throughput() > 0 and result.percentile_ms(app_load.SIMILAR, 50) > 0
    assert list(uploads.iterdir()) == []  # Every upload's temporary file removed.
