r"""Embeds a catalog with the exported models and builds (or updates) its ScaNN index.

Usage (your own music, the pretrained models; then `python -m serving.app --index_dir=my_index`):

    python -m serving.build_index --data=~/Music --index_dir=my_index

or a catalog CSV with models exported elsewhere (`make demo` exports the
pretrained models to `demo_output/export`):

    python -m serving.build_index --export_base=demo_output/export \
        --data=demo/catalog.csv --index_dir=demo_output/index

embeds every track with the latest exports under `--export_base` (default:
the pretrained models in `pretrained/`, exported to `pretrained/export` on
first use; `serving.export.pretrained_exports`) of
`--embedding_models` (stage 2 ranking, default `msd_musicnn,mtt_musicnn`: an
ensemble of musicnn trained on the Million Song Dataset and on
MagnaTagATune) and `--tag_model` (stage 1 tags, default
`mtat_crnn`: the reference's MagnaTagATune CRNN; `--tag_model=` for none),
any exported models by their folder names, `NAME/VERSION` for another
version than the latest (e.g. the demo-trained
`--embedding_models=short_chunk_res --tag_model=crnn/1`). Several ranking
models make an ensemble: each model's embedding is L2-normalised, weighted
(`--embedding_weights`, default equal), concatenated and normalised again,
e.g. the default. The job runs in Beam
(DirectRunner on all cores unless Beam flags say otherwise, e.g.
`--runner=dask [--dask_client_address=tcp://HOST:8786]` or
`--runner=DataflowRunner ...`, with `--temp_location` on storage every
worker reaches; each worker sends up to `--tracks_per_batch`
tracks of one length through a model at once), then writes the index to `--index_dir` with
`rejected.csv`. `--data` may instead name a folder of music
(`--data=~/Music`: every audio file under it, described by its own tags;
`intake.folder_catalog`; the catalog it gave is written to
`INDEX_DIR/catalog.csv`, and the web app plays its files without
`--audio_root`), or TFRecord datasets
(`--data=demo_output/tfrecords_128,demo_output/tfrecords_96`, folders with
a `dataset_info.json`): each model reads the one with its log-mel
parameters. Add or replace tracks in an
existing index with `--update`; remove some with `--delete=ID,ID`.
"""

from __future__ import annotations

from tf_startup import load_tensorflow, run

import os
import sys

from absl import app, flags, logging

from data_prep import runner_flags
from intake import catalog as catalog_lib
from intake import folder_catalog
from serving import flag_groups
from serving.retrieval import index_layout

_EXPORT_BASE = flag_groups.define_export_base("the exported models, as <export_base>/<model name>/<version>/.")
flag_groups.refuse_renamed("export_dir", "export_base")
_EMBEDDING_MODELS = flags.DEFINE_list(
    "embedding_models",
    ["msd_musicnn", "mtt_musicnn"],
    "Stage 2's ranking model(s): NAME or NAME/VERSION under --export_base (default: the latest version); "
    "several make an ensemble whose embeddings are combined.",
)
_EMBEDDING_WEIGHTS = flags.DEFINE_list(
    "embedding_weights", None, "One positive weight per --embedding_models entry (default: all 1)."
)
_TAG_MODEL = flags.DEFINE_string(
    "tag_model", "mtat_crnn", "Stage 1's tag model: NAME or NAME/VERSION under --export_base ('' for none)."
)
flag_groups.refuse_renamed("embedding_model", "embedding_models")
flag_groups.refuse_renamed("embedding_version", "embedding_models", "NAME/VERSION")
flag_groups.refuse_renamed("tag_version", "tag_model", "NAME/VERSION")
_DATA = flags.DEFINE_list(
    "data", None, "A catalog CSV, a folder of music, or TFRecord dataset directories (comma-separated)."
)
_AUDIO_ROOT = flags.DEFINE_string("audio_root", None, "Root of relative audio paths (default: the CSV's folder).")
# tfrecords.dataset_info.FILENAME (that module loads TensorFlow; this check runs before it does).
DATASET_INFO_FILENAME = "dataset_info.json"
_INDEX_DIR = flags.DEFINE_string("index_dir", None, "The index folder.", required=True)
_UPDATE = flags.DEFINE_bool("update", False, "Add/replace the tracks in the existing index (ScaNN upsert).")
_DELETE = flags.DEFINE_list("delete", None, "Track ids to remove from the existing index (ScaNN delete).")
_KIND = flags.DEFINE_enum(
    "kind", "auto", ["auto", *index_layout.SEARCHER_KINDS], "ScaNN configuration; auto chooses by size."
)
_NUM_SHARDS = flags.DEFINE_integer(
    "num_shards",
    1,
    "Split a new index into this many shards by track-id hash (docs/recommending.md: Index sizing).",
    lower_bound=1,
)
_LEAVES = flags.DEFINE_float("leaves_searched_fraction", 0.05, "Share of tree leaves searched (tree_ah only).")
_TRACKS_PER_BATCH = flags.DEFINE_integer(
    "tracks_per_batch",
    index_layout.TRACKS_PER_BATCH,
    "The most tracks of one length a worker sends through a model in one pass (1: one at a time).",
    lower_bound=1,
)


def _models():
    from serving.embedding.ensemble import EmbeddingModels
    from serving.embedding.index_models import IndexModels
    from serving.export import exported_model

    export_base = _EXPORT_BASE.value
    if export_base is None:  # The pretrained models, exported on first use.
        from serving.export import pretrained_exports

        export_base = pretrained_exports.EXPORT_BASE
        specs = [*_EMBEDDING_MODELS.value, *([_TAG_MODEL.value] if _TAG_MODEL.value else [])]
        for name in pretrained_exports.export_missing(specs):
            print(f"exported the pretrained model {name} to {os.path.join(export_base, name)}")
    refs = [exported_model.resolve_named(export_base, spec) for spec in _EMBEDDING_MODELS.value]
    try:
        weights = tuple(float(w) for w in _EMBEDDING_WEIGHTS.value or ())
    except ValueError:
        raise ValueError(f"--embedding_weights={','.join(_EMBEDDING_WEIGHTS.value)}: not numbers") from None
    tag_model = exported_model.resolve_named(export_base, _TAG_MODEL.value) if _TAG_MODEL.value else None
    return IndexModels(EmbeddingModels(tuple(refs), weights), tag_model)


def _checked_input():
    """The usage and the catalog, checked before TensorFlow, Beam and ScaNN load: (catalog or None, dataset dirs)."""
    if _DELETE.value:
        if _DATA.value:
            raise app.UsageError("--delete cannot be combined with --data")
        index_layout.require_index(_INDEX_DIR.value)
        return None, None
    if not _DATA.value:
        raise app.UsageError("--data is required (or --delete)")
    if _UPDATE.value:
        index_layout.require_index(_INDEX_DIR.value)
    if len(_DATA.value) == 1 and _is_catalog(_DATA.value[0]):
        catalog = catalog_lib.read_catalog(_DATA.value[0], _AUDIO_ROOT.value)
        if catalog.format == folder_catalog.FORMAT:
            print(folder_catalog.scan_summary(catalog))
        return catalog, None
    return None, _DATA.value


def _is_catalog(data: str) -> bool:
    """A catalog CSV, or a folder of music (a folder with a `dataset_info.json` is a TFRecord dataset)."""
    if data.lower().endswith(".csv"):
        return True
    data = os.path.expanduser(data)
    return folder_catalog.is_folder(data) and not os.path.exists(os.path.join(data, DATASET_INFO_FILENAME))


def main(argv):
    try:
        catalog, dataset_dirs = _checked_input()
    except (catalog_lib.CatalogError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    load_tensorflow()
    from data_prep import beam_jobs
    from serving.export.exported_model import ModelMismatchError
    from serving.retrieval.catalog_index import IndexMismatchError

    logging.get_absl_handler()  # Beam's workers forward their INFO lines; keep warnings.
    beam_jobs.quiet_runner_logs()
    try:
        _run(catalog, dataset_dirs, argv[1:])
    except (
        catalog_lib.CatalogError,
        FileNotFoundError,
        IndexMismatchError,
        ModelMismatchError,
        ValueError,
        beam_jobs.RunnerUnavailableError,
    ) as error:
        sys.exit(f"error: {error}")  # The user's input: the message alone, no traceback.
    except beam_jobs.JobFailedError as error:
        sys.exit(f"error: {error}\nthe index was not changed; run the same command again to redo it")
    except KeyError as error:  # Unknown ids in --delete.
        sys.exit(f"error: {error.args[0]}")


def _run(catalog, dataset_dirs, pipeline_args: list[str]):
    from serving.retrieval import index_builder

    if _DELETE.value:
        left = index_builder.delete_tracks(_INDEX_DIR.value, _DELETE.value)
        print(f"deleted {len(_DELETE.value)} tracks from {_INDEX_DIR.value}; {left} left")
        return
    summary = index_builder.build_index(
        _INDEX_DIR.value,
        _models(),
        catalog=catalog,
        dataset_dirs=dataset_dirs,
        update=_UPDATE.value,
        kind=_KIND.value,
        leaves_searched_fraction=_LEAVES.value,
        num_shards=_NUM_SHARDS.value,
        pipeline_args=pipeline_args,
        tracks_per_batch=_TRACKS_PER_BATCH.value,
    )
    print(summary.render())


if __name__ == "__main__":
    run(main, flags_parser=runner_flags.parse)
