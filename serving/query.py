r"""Recommends catalog tracks for an audio file or a catalog track.

Usage (after `make demo`):

    python -m serving.query --index_dir=demo_output/index --audio=demo/audio/some_song.mp3 --k=5
    python -m serving.query --index_dir=demo_output/index --track_id=TRACK_ID --format=json
    python -m serving.query --index_dir=demo_output/index --audio=song.mp3 --server=localhost:8500

embeds the audio with the exact model versions the index was built with, in
this process from the SavedModels by default or through TF Serving with
`--server` (gRPC; `--protocol=rest` for port 8501), then prints the ranked
results with artist, title, score and shared tags. `--tags_png=FILE` also
writes a bar chart of the query's top tags. Stage 1 (tag filter) and stage 2
(embedding rank) can be switched off with `--notag_filter` and
`--noembedding_rank`.
"""

from __future__ import annotations

import sys

from tfrecords import tf_startup  # noqa: E402 - first: nothing may import TensorFlow before it.

tf_startup.quiet_start()

from absl import app, flags  # noqa: E402

from data_prep import audio  # noqa: E402
from serving import queries  # noqa: E402
from serving.catalog_index import CatalogIndex  # noqa: E402
from serving.client import ServingError  # noqa: E402
from serving.embedders import LocalEmbedder, RemoteEmbedder  # noqa: E402
from serving.recommender import Recommender, TagFilter  # noqa: E402

_INDEX_DIR = flags.DEFINE_string("index_dir", None, "The index built by serving.build_index.", required=True)
_AUDIO = flags.DEFINE_string("audio", None, "An audio file to find similar catalog tracks for.")
_TRACK_ID = flags.DEFINE_string("track_id", None, "A catalog track to find similar tracks for.")
_K = flags.DEFINE_integer("k", 10, "Number of recommendations.", lower_bound=1)
_SERVER = flags.DEFINE_string("server", None, "TF Serving host:port; default: run the SavedModels in-process.")
_PROTOCOL = flags.DEFINE_enum("protocol", "grpc", ["grpc", "rest"], "How to talk to --server.")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "Where the exports are, if they moved since the index was built.")
_FORMAT = flags.DEFINE_enum("format", "table", ["table", "json"], "Output format.")
_TAG_FILTER = flags.DEFINE_bool("tag_filter", True, "Stage 1: keep only tracks sharing a confident tag.")
_TAG_THRESHOLD = flags.DEFINE_float("tag_threshold", TagFilter.threshold, "Stage 1: minimum tag probability.")
_TAG_TOP_N = flags.DEFINE_integer("tag_top_n", TagFilter.top_n, "Stage 1: at most this many tags per track.")
_EMBEDDING_RANK = flags.DEFINE_bool("embedding_rank", True, "Stage 2: rank by embedding similarity (ScaNN).")
_MAX_PER_ARTIST = flags.DEFINE_integer("max_per_artist", None, "At most this many results per artist.")
TOP_TAGS = 5  # The query's most probable tags shown, whether or not stage 1 uses them.

_TAGS_PNG = flags.DEFINE_string("tags_png", None, "Write a bar chart of the query's top tags to this PNG.")


def _query(catalog, recommender):
    if _TRACK_ID.value is not None:
        return recommender.query_for_track(_TRACK_ID.value), f"track {_TRACK_ID.value}"
    if _SERVER.value:
        embedder = RemoteEmbedder(_SERVER.value, catalog.embedding_model, catalog.tag_model, _PROTOCOL.value)
    else:
        embedder = LocalEmbedder(catalog.embedding_model, catalog.tag_model, _EXPORT_DIR.value)
    return queries.audio_query(_AUDIO.value, embedder), _AUDIO.value


def main(argv):
    del argv
    if (_AUDIO.value is None) == (_TRACK_ID.value is None):
        raise app.UsageError("give exactly one of --audio and --track_id")
    try:
        catalog = CatalogIndex.load(_INDEX_DIR.value)
        use_tags = _TAG_FILTER.value and catalog.tag_model is not None
        tag_filter = TagFilter(_TAG_THRESHOLD.value, _TAG_TOP_N.value) if use_tags else None
        recommender = Recommender(catalog, tag_filter)
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
    render = queries.render_json if _FORMAT.value == "json" else queries.render_table
    print(render(result, label, queries.top_tags(query.tag_probabilities, catalog.vocabulary, TOP_TAGS)))
    if _TAGS_PNG.value:
        if query.tag_probabilities is None:
            sys.exit("error: --tags_png needs an index with a tag model")
        queries.write_tag_chart(
            _TAGS_PNG.value, query.tag_probabilities, catalog.vocabulary, title=f"top tags: {label}"
        )
        print(f"tag chart: {_TAGS_PNG.value}", file=sys.stderr)


if __name__ == "__main__":
    app.run(main)
