r"""Preprocesses a music catalog into sharded log-mel TFRecords with Apache Beam.

Usage (the bundled demo catalog, DirectRunner on all cores):

    python -m data_prep --catalog=demo/catalog.csv --output_dir=/tmp/demo_tfrecords \
        --split_by=track

MagnaTagATune with the published top-50 split of Won et al. (2020), 96 mel
bands for the CRNN:

    python -m data_prep --mtat_annotations=mtat/annotations_final.csv \
        --audio_root=mtat/mp3 --mtat_split_dir=sota-music-tagging-models/split/mtat \
        --n_mels=96 --output_dir=/data/mtat_96

A folder of music (every audio file under it, described by its own tags:
artist, title, album, genres as tags; the catalog it gave is written to
`OUTPUT_DIR/catalog.csv`, to repeat or edit the run; training on genres:
`--require_tags`, the default, keeps the tracks that have one):

    python -m data_prep --catalog=~/Music --output_dir=/tmp/my_music --norequire_tags

For the musicnn models (their own front end; e.g. to fine-tune them):

    python -m data_prep --catalog=demo/catalog.csv --output_dir=/tmp/demo_musicnn \
        --split_by=track --log_mel_preset=musicnn

On Dask worker processes (a LocalCluster of one per core, or a cluster:
`--dask_client_address=tcp://HOST:8786`; docs/clusters.md):

    python -m data_prep --catalog=demo/catalog.csv --output_dir=/tmp/demo_tfrecords \
        --split_by=track --runner=dask

Any other Beam runner: append its pipeline flags, e.g.

    python -m data_prep --catalog=gs://bucket/catalog.csv --output_dir=gs://bucket/out \
        --runner=DataflowRunner --project=my-project --region=us-central1 \
        --temp_location=gs://bucket/tmp --setup_file=./setup.py
"""

from __future__ import annotations

from tf_startup import load_tensorflow, run

import dataclasses
import sys

from absl import app, flags, logging

from data_prep import runner_flags, splits
from data_prep.splits import SPLIT_BY_CHOICES
from features.logmel_spec import PRESETS, LogMelSpec
from intake import catalog as catalog_lib
from intake import folder_catalog

_CATALOG = flags.DEFINE_string(
    "catalog", None, "Catalog CSV (local path or URI), or a folder of music (every audio file under it)."
)
_AUDIO_ROOT = flags.DEFINE_string(
    "audio_root", None, "Directory that relative audio paths are resolved against; default: the catalog's directory."
)
_MTAT_ANNOTATIONS = flags.DEFINE_string(
    "mtat_annotations", None, "MagnaTagATune annotations_final.csv, instead of --catalog."
)
_MTAT_SPLIT_DIR = flags.DEFINE_string(
    "mtat_split_dir", None, "Directory with the published train/valid/test/tags .npy files; default: recompute."
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the dataset is written.", required=True)
_SPLIT_BY = flags.DEFINE_enum("split_by", "artist", SPLIT_BY_CHOICES, "How tracks are grouped into disjoint splits.")
_SPLIT_FRACTIONS = flags.DEFINE_list(
    "split_fractions", ["0.8", "0.1", "0.1"], "Train, valid, test fractions: three numbers from 0 that add up to 1."
)
flags.register_validator("split_fractions", splits.check_split_fractions_flag)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the split assignment.")
_SAMPLE_RATE = flags.DEFINE_integer("sample_rate", 16000, "Sample rate of the log-mel front end in Hz.")
_N_FFT = flags.DEFINE_integer("n_fft", 512, "FFT size and window length.")
_HOP_LENGTH = flags.DEFINE_integer("hop_length", 256, "Hop between frames.")
_N_MELS = flags.DEFINE_integer("n_mels", 128, "Mel bands (128 for the short-chunk models, 96 for the CRNN).")
_F_MIN = flags.DEFINE_float("f_min", 0.0, "Lowest filterbank frequency in Hz.")
_F_MAX = flags.DEFINE_float("f_max", 8000.0, "Highest filterbank frequency in Hz.")
_LOG_MEL_PRESET = flags.DEFINE_enum(
    "log_mel_preset",
    None,
    sorted(PRESETS),
    "A named front end instead of the six flags above: won2020 (128 bands), won2020_96 (the CRNN), "
    "musicnn (Slaney mel, log10(1 + 10000 x), 96 bands: for the musicnn models).",
)
_SPEC_FLAGS = ("sample_rate", "n_fft", "hop_length", "n_mels", "f_min", "f_max")
_LOG_MEL_DTYPE = flags.DEFINE_enum("log_mel_dtype", "float16", ["float16", "float32"], "Log-mel storage dtype.")
_COMPRESSION = flags.DEFINE_enum(
    "compression",
    "none",
    ["none", "GZIP", "ZLIB"],
    "TFRecord compression. float16 log-mels barely compress (GZIP saves about 11 %) while GZIP makes reading about 4x slower, hence none.",
)
_MIN_DURATION_S = flags.DEFINE_float("min_duration_s", 1.0, "Shorter audio is rejected.")
_SILENCE_DBFS = flags.DEFINE_float("silence_threshold_dbfs", -80.0, "Audio with a lower peak level is rejected.")
_REQUIRE_TAGS = flags.DEFINE_boolean("require_tags", True, "Reject rows without a vocabulary tag.")
_MIN_TAG_COUNT = flags.DEFINE_integer("min_tag_count", 1, "Leave out tags on fewer tracks.")
_MAX_TAGS = flags.DEFINE_integer("max_tags", None, "Keep at most this many of the most frequent tags.")
_VOCABULARY = flags.DEFINE_string("vocabulary", None, "File with a fixed tag vocabulary, one tag per line.")
_EXAMPLES_PER_SHARD = flags.DEFINE_integer("examples_per_shard", 64, "Target tracks per shard.")


def _log_mel() -> LogMelSpec:
    if _LOG_MEL_PRESET.value is None:
        return LogMelSpec(
            sample_rate=_SAMPLE_RATE.value,
            n_fft=_N_FFT.value,
            hop_length=_HOP_LENGTH.value,
            n_mels=_N_MELS.value,
            f_min=_F_MIN.value,
            f_max=_F_MAX.value,
        )
    given = [f"--{name}" for name in _SPEC_FLAGS if flags.FLAGS[name].present]
    if given:
        raise app.UsageError(f"--log_mel_preset sets the front end; drop {', '.join(given)}")
    return PRESETS[_LOG_MEL_PRESET.value]


def _config():
    from data_prep import pipeline

    vocabulary = None
    if _VOCABULARY.value:
        text = catalog_lib.read_text(_VOCABULARY.value).decode("utf-8")
        vocabulary = tuple(line.strip() for line in text.splitlines() if line.strip())
    return pipeline.PreprocessConfig(
        output_dir=_OUTPUT_DIR.value,
        log_mel=_log_mel(),
        log_mel_dtype=_LOG_MEL_DTYPE.value,
        compression="" if _COMPRESSION.value == "none" else _COMPRESSION.value,
        split_by=_SPLIT_BY.value,
        split_fractions=tuple(float(f) for f in _SPLIT_FRACTIONS.value),
        seed=_SEED.value,
        min_duration_s=_MIN_DURATION_S.value,
        silence_threshold_dbfs=_SILENCE_DBFS.value,
        require_tags=_REQUIRE_TAGS.value,
        min_tag_count=_MIN_TAG_COUNT.value,
        max_tags=_MAX_TAGS.value,
        vocabulary=vocabulary,
        examples_per_shard=_EXAMPLES_PER_SHARD.value,
    )


def main(argv):
    if bool(_CATALOG.value) == bool(_MTAT_ANNOTATIONS.value):
        raise app.UsageError("give exactly one of --catalog and --mtat_annotations")
    if _MTAT_ANNOTATIONS.value and not _AUDIO_ROOT.value:
        raise app.UsageError("--mtat_annotations needs --audio_root (the folder holding 0/ ... f/)")
    _log_mel()  # Its usage errors, too, before TensorFlow loads.
    if catalog_lib.is_local_file(_OUTPUT_DIR.value):
        sys.exit(f"error: --output_dir={_OUTPUT_DIR.value} is a file; give a folder (new or a dataset's)")
    catalog = None
    if _CATALOG.value:
        try:
            catalog = catalog_lib.read_catalog(_CATALOG.value, _AUDIO_ROOT.value)
        except catalog_lib.CatalogError as error:
            sys.exit(f"error: {error}")
        if catalog.format == folder_catalog.FORMAT:
            print(folder_catalog.scan_summary(catalog))
        if not catalog.num_rows:
            what = "no audio files" if catalog.format == folder_catalog.FORMAT else "no rows after the header"
            sys.exit(f"error: {_CATALOG.value}: {what}: nothing to preprocess")
    load_tensorflow()
    from data_prep import beam_jobs

    try:
        _run(catalog, argv[1:])
    except (catalog_lib.CatalogError, FileNotFoundError, ValueError, beam_jobs.RunnerUnavailableError) as error:
        sys.exit(f"error: {error}")  # The user's input: the message alone, no traceback.
    except beam_jobs.JobFailedError as error:
        sys.exit(f"error: {error}\nnothing was published; run the same command again to redo it")


def _run(catalog, pipeline_args: list[str]):
    from data_prep import beam_jobs, mtat, pipeline

    # The runners forward every worker's INFO lines; keep warnings.
    logging.get_absl_handler()  # Make sure absl's handler is installed first.
    beam_jobs.quiet_runner_logs()
    config = _config()
    if _MTAT_ANNOTATIONS.value:
        catalog, vocabulary = mtat.read_mtat(_MTAT_ANNOTATIONS.value, _AUDIO_ROOT.value, _MTAT_SPLIT_DIR.value)
        if config.vocabulary is None:
            config = dataclasses.replace(config, vocabulary=tuple(vocabulary))
        config = dataclasses.replace(config, split_by="given")
    logging.info("Beam pipeline arguments: %s", pipeline_args)
    summary = pipeline.run(catalog, config, pipeline_args)
    print(summary.render())
    print(f"dataset: {config.output_dir}")


if __name__ == "__main__":
    run(main, flags_parser=runner_flags.parse)
