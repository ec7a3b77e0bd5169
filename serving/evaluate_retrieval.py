r"""Scores indexes' recommendations against the catalog's own tags (e.g. same soundtrack).

Usage (after `make demo`: the pretrained models' index next to the demo-trained one):

    python -m serving.evaluate_retrieval --index_dir=demo_output/index,demo_output/index_demo_trained \
        --catalog=demo/catalog.csv --k=3 --mfcc_baseline

queries each index with every catalog track and prints precision@k, recall@k
and MAP@k of results sharing a `tags` value with the query, for the default
answer, the two stages (tag filter first), embeddings only (no query
expansion) and tags only (each row names its models), next to the chance
level; `--tag_threshold` and `--tag_top_n` set the tag sets. `--mfcc_baseline` adds the classic content baseline
(MFCC-20 + delta mean/std, computed from the catalog's audio) and each row's
P@k as a ratio to it. `--output_json=FILE` writes the same figures.
"""

from __future__ import annotations

from tf_startup import load_tensorflow, run

import dataclasses
import json
import sys

from absl import flags

from intake import catalog as catalog_lib
from serving import flag_groups
from serving.retrieval import index_layout

_INDEX_DIR = flags.DEFINE_list("index_dir", None, "One or more indexes built by serving.build_index.", required=True)
_CATALOG = flags.DEFINE_string("catalog", None, "A catalog CSV whose `tags` are the ground truth.", required=True)
_AUDIO_ROOT = flags.DEFINE_string("audio_root", None, "Root of relative audio paths (default: the CSV's folder).")
_K = flags.DEFINE_integer("k", 5, "Results per query.", lower_bound=1)
_TAG_FILTER = flag_groups.define_tag_filter()
_MFCC_BASELINE = flags.DEFINE_bool("mfcc_baseline", False, "Also score MFCC statistics of the catalog's audio.")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Also write the scores to this JSON file.")

MFCC_NAME = "MFCC-20+delta mean/std: embeddings only"


def labelled(index, scores: list):
    """Each configuration named after the models that made it."""
    ranking = index.embedding_models.label
    tags = index.tag_model.name if index.tag_model else None
    names = {
        "default": f"{ranking} (+ {tags} tags to explain)" if tags else ranking,
        "two stages": f"{tags} tags + {ranking}",
        "embeddings only": ranking,
        "tags only": f"{tags} tags",
    }
    return [
        dataclasses.replace(s, configuration=f"{names[s.configuration]}: {s.configuration}")
        if s.configuration in names
        else s
        for s in scores
    ]


def main(argv):
    del argv
    try:  # What the user gave, checked before TensorFlow and ScaNN load.
        parsed = catalog_lib.read_catalog(_CATALOG.value, _AUDIO_ROOT.value)
        for index_dir in _INDEX_DIR.value:
            index_layout.require_index(index_dir)
    except (catalog_lib.CatalogError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    unwritable = flag_groups.unwritable_output("output_json", _OUTPUT_JSON.value)
    if unwritable:
        sys.exit(f"error: {unwritable}")
    load_tensorflow()
    from data_prep.progress import Progress
    from serving.retrieval import evaluation
    from serving.retrieval.sharded_index import load_index

    truth = {entry.track_id: set(entry.tags) for entry in parsed.entries}
    tag_filter = _TAG_FILTER.tag_filter()
    indexes = {}
    for index_dir in _INDEX_DIR.value:
        try:
            indexes[index_dir] = load_index(index_dir)  # One index, or the shards of one (read as one).
        except (FileNotFoundError, ValueError) as error:
            sys.exit(f"error: {error}")
    # Every track with ground truth queries each configuration of every index, then the MFCC baseline reads
    # every catalog track: the units of progress.
    total = sum(
        len(evaluation.configurations(index)) * sum(1 for track in index.tracks if truth.get(track.track_id))
        for index in indexes.values()
    )
    total += len(parsed.entries) if _MFCC_BASELINE.value else 0
    progress = Progress("evaluate_retrieval", total, unit="queries and tracks")
    with progress:
        rows, chance, baseline = _scores(parsed, indexes, truth, tag_filter, progress)
    print(evaluation.render(rows, _K.value, baseline))
    if _OUTPUT_JSON.value:
        try:
            with open(_OUTPUT_JSON.value, "w", encoding="utf-8") as handle:
                json.dump({"k": _K.value, "scores": [s.summary() for s in rows]}, handle, indent=2)
        except OSError as error:
            sys.exit(f"error: --output_json={_OUTPUT_JSON.value}: {error.strerror or error}")


def _scores(parsed, indexes, truth, tag_filter, progress):
    """Each index's configurations, the MFCC baseline if asked, and chance: (rows, chance, baseline)."""
    from serving.retrieval import evaluation, mfcc_baseline

    rows, chance = [], None
    for index_dir, index in indexes.items():
        missing = sum(1 for track in index.tracks if not truth.get(track.track_id))
        if missing == len(index):
            sys.exit(
                f"error: {index_dir}: none of its {len(index)} tracks has ground-truth tags in {_CATALOG.value} "
                "(no track id in common, or no tags): nothing to score"
            )
        print(f"{index_dir}: {len(index)} indexed tracks; {missing} without ground-truth tags (not queried)")
        *scores, chance = evaluation.evaluate(index, truth, _K.value, tag_filter, on_query=progress.advance)
        rows += labelled(index, scores)
    baseline = None
    if _MFCC_BASELINE.value:
        ids, vectors, skipped = mfcc_baseline.catalog_statistics(parsed, on_track=progress.advance)
        for track_id, reason in skipped.items():
            print(f"MFCC baseline: skipped {track_id}: {reason}")
        baseline = evaluation.evaluate_embeddings(MFCC_NAME, ids, vectors, truth, _K.value)
        rows.append(baseline)
    rows.append(chance)
    return rows, chance, baseline


if __name__ == "__main__":
    run(main)
