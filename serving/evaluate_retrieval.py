r"""Scores an index's recommendations against the catalog's own tags (e.g. same soundtrack).

Usage (after `make demo`):

    python -m serving.evaluate_retrieval --index_dir=demo_output/index --catalog=demo/catalog.csv --k=3

queries the index with every catalog track and prints precision@k, recall@k
and MAP@k of results sharing a `tags` value with the query, for the two-stage
recommender, embeddings only and tags only, next to the chance level.
`--output_json=FILE` writes the same figures.
"""

from __future__ import annotations

import dataclasses
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from data_prep import catalog as catalog_lib  # noqa: E402
from serving import retrieval_evaluation  # noqa: E402
from serving.catalog_index import CatalogIndex  # noqa: E402
from serving.recommender import TagFilter  # noqa: E402

_INDEX_DIR = flags.DEFINE_string("index_dir", None, "The index built by serving.build_index.", required=True)
_CATALOG = flags.DEFINE_string("catalog", None, "A catalog CSV whose `tags` are the ground truth.", required=True)
_K = flags.DEFINE_integer("k", 5, "Results per query.", lower_bound=1)
_TAG_THRESHOLD = flags.DEFINE_float("tag_threshold", TagFilter.threshold, "Stage 1: minimum tag probability.")
_TAG_TOP_N = flags.DEFINE_integer("tag_top_n", TagFilter.top_n, "Stage 1: at most this many tags per track.")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Also write the scores to this JSON file.")


def main(argv):
    del argv
    index = CatalogIndex.load(_INDEX_DIR.value)
    parsed = catalog_lib.read_catalog(_CATALOG.value)
    truth = {entry.track_id: set(entry.tags) for entry in parsed.entries}
    missing = sum(1 for track in index.tracks if not truth.get(track.track_id))
    scores = retrieval_evaluation.evaluate(index, truth, _K.value, TagFilter(_TAG_THRESHOLD.value, _TAG_TOP_N.value))
    print(f"{len(index)} indexed tracks; {missing} without ground-truth tags in {_CATALOG.value} (not queried)")
    print(retrieval_evaluation.render(scores, _K.value))
    if _OUTPUT_JSON.value:
        with open(_OUTPUT_JSON.value, "w", encoding="utf-8") as handle:
            json.dump({"k": _K.value, "scores": [dataclasses.asdict(s) for s in scores]}, handle, indent=2)


if __name__ == "__main__":
    app.run(main)
