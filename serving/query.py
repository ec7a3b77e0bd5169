r"""Recommends catalog tracks for an audio file or a catalog track.

Usage (after `make demo`):

    python -m serving.query --index_dir=demo_output/index --audio=demo/audio/some_song.mp3 --k=5
    python -m serving.query --index_dir=demo_output/index --track_id=TRACK_ID --format=json
    python -m serving.query --index_dir=demo_output/index --audio=song.mp3 --server=localhost:8500

embeds the audio with the exact model versions the index was built with, in
this process from the SavedModels by default or through TF Serving with
`--server` (gRPC; `--protocol=rest` for port 8501), then prints the ranked
results with artist, title, score and the tags each shares with the query.
`--tags_png=FILE` also writes a bar chart of the query's top tags. The
default answer ranks the whole catalog by the embeddings (centred on the
catalog, the query expanded with its `--query_expansion` nearest tracks;
docs/recommending.md, "How recommendations are made"); `--tag_filter` adds the research
design's stage 1 (only tracks sharing one of the query's confident CRNN tags,
`--tag_threshold`, `--tag_top_n`), `--noembedding_rank` ranks by the tags
instead. `--export_base` says where the exported models are if they moved
since the index was built.
"""

from __future__ import annotations

from tf_startup import load_tensorflow, run

import sys

from absl import app, flags

from intake import audio
from serving import flag_groups
from serving.retrieval import index_layout

_INDEX_DIR = flags.DEFINE_string("index_dir", None, "The index built by serving.build_index.", required=True)
_AUDIO = flags.DEFINE_string("audio", None, "An audio file to find similar catalog tracks for.")
_TRACK_ID = flags.DEFINE_string("track_id", None, "A catalog track to find similar tracks for.")
_K = flags.DEFINE_integer("k", 10, "Number of recommendations.", lower_bound=1)
_MODEL_SERVER = flag_groups.define_model_server()
_EXPORT_BASE = flag_groups.define_export_base("where the exported models are, if they moved since the index was built.")
flag_groups.refuse_renamed("export_dir", "export_base")
_FORMAT = flags.DEFINE_enum("format", "table", ["table", "json"], "Output format.")
_TAG_FILTER = flags.DEFINE_bool(
    "tag_filter",
    False,
    "Stage 1 of the research design: keep only tracks sharing one of the query's confident tags (off by default: "
    "on unseen music it lowered precision; the tags explain the answers either way).",
)
_TAG_FILTER_SETTINGS = flag_groups.define_tag_filter()
_RANKING = flag_groups.define_ranking()
_EMBEDDING_RANK = flags.DEFINE_bool("embedding_rank", True, "Stage 2: rank by embedding similarity (ScaNN).")
_MAX_PER_ARTIST = flags.DEFINE_integer("max_per_artist", None, "At most this many results per artist.")
TOP_TAGS = 5  # The query's most probable tags shown, whether or not stage 1 uses them.

_TAGS_PNG = flags.DEFINE_string("tags_png", None, "Write a bar chart of the query's top tags to this PNG.")


def _query(catalog, recommender):
    if _TRACK_ID.value is not None:
        return recommender.query_for_track(_TRACK_ID.value), f"track {_TRACK_ID.value}"
    from serving.embedding import query_audio

    embedder = _MODEL_SERVER.embedder(catalog, _EXPORT_BASE.value)
    return query_audio.audio_query(_AUDIO.value, embedder), _AUDIO.value


def main(argv):
    del argv
    if (_AUDIO.value is None) == (_TRACK_ID.value is None):
        raise app.UsageError("give exactly one of --audio and --track_id")
    try:  # What the user gave, checked before TensorFlow and ScaNN load.
        index_layout.require_index(_INDEX_DIR.value)
        if _AUDIO.value is not None:
            audio.open_source(_AUDIO.value)
    except (audio.AudioError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    unwritable = flag_groups.unwritable_output("tags_png", _TAGS_PNG.value)
    if unwritable:
        sys.exit(f"error: {unwritable}")
    load_tensorflow()
    from serving.embedding.tf_serving_client import ServingError
    from serving.retrieval import rendering
    from serving.retrieval.recommender import Recommender
    from serving.retrieval.sharded_index import load_index

    try:
        catalog = load_index(_INDEX_DIR.value)  # One index, or the shards of one (read as one).
        if _TAG_FILTER.value and catalog.tag_model is None:
            raise ValueError(f"{_INDEX_DIR.value} has no tag model: --tag_filter cannot work")
        tag_sets = _TAG_FILTER_SETTINGS.tag_filter()
        tag_filter = tag_sets if _TAG_FILTER.value else None
        recommender = Recommender(catalog, tag_filter, expansion=_RANKING.expansion(), tag_sets=tag_sets)
        query, label = _query(catalog, recommender)
        result = recommender.recommend(
            query,
            _K.value,
            tag_filter=tag_filter,
            rank_by_embedding=_EMBEDDING_RANK.value,
            max_per_artist=_MAX_PER_ARTIST.value,
        )
    except (audio.AudioError, KeyError, ValueError, FileNotFoundError, ServingError) as error:
        sys.exit(f"error: {error.args[0] if isinstance(error, KeyError) else error}")
    render = rendering.render_json if _FORMAT.value == "json" else rendering.render_table
    print(render(result, label, rendering.top_tags(query.tag_probabilities, catalog.vocabulary, TOP_TAGS)))
    if _TAGS_PNG.value:
        if query.tag_probabilities is None:
            sys.exit("error: --tags_png needs an index with a tag model")
        try:
            rendering.write_tag_chart(
                _TAGS_PNG.value, query.tag_probabilities, catalog.vocabulary, title=f"top tags: {label}"
            )
        except OSError as error:
            sys.exit(f"error: --tags_png={_TAGS_PNG.value}: {error.strerror or error}")
        print(f"tag chart: {_TAGS_PNG.value}", file=sys.stderr)


if __name__ == "__main__":
    run(main)
