r"""Catalog embedding throughput (tracks per second): `serving.build_index`'s job against a plain loop.

Models: the shipped defaults (`msd_musicnn` + `mtt_musicnn` ranking as an
ensemble, `mtat_crnn` tags), exported here by `serving.export` from
`pretrained/`. Catalog: `../shared/data/music/catalog.csv` (199 x 30 s MP3s)
when present, else the bundled demo catalog (which the section then says).

Baseline (what a user would write first): one process loops over the
catalog; for each track it decodes and checks the audio exactly as the job
does (`load_checked_waveform`, file hash), then calls each model's waveform
signature on that one track (`LoadedModel.from_waveform`). TensorFlow is free
to use both cores inside each call.

Ours, timed around `embedding_job.embed` (what `python -m serving.build_index`
runs before writing the index), same process, models loaded by the job:
- from the catalog CSV: the DirectRunner's worker threads decode in
  parallel with inference, and each sends up to `tracks_per_batch` tracks
  of one length through a model in one pass;
- from TFRecords (`data_prep` datasets in each model's log-mel variant,
  written beforehand and not timed): no decoding, the `log_mel` signatures.

Every row's embeddings are compared with the baseline's: the cosine of each
track's combined embedding and the overlap of each track's top-10 neighbours
(exact search over the catalog).

Usage:

    python -m benchmarks --only=catalog_embedding
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time

import numpy as np

from benchmarks import preprocess_throughput, report
from data_prep import audio, pipeline
from data_prep import catalog as catalog_lib
from data_prep.audio_checks import AudioChecks, load_checked_waveform
from models import artifact
from serving.embedding.ensemble import EmbeddingModels
from serving.export import exported_model, saved_model
from serving.export.exported_model import LoadedModel
from serving.retrieval import embedding_job
from serving.retrieval.catalog_index import TrackRecord

SECTION = "catalog_embedding"
TARGET_RATIO = 2.0
TOP_K = 10
RANKING_MODELS = ("msd_musicnn", "mtt_musicnn")
TAG_MODEL = "mtat_crnn"
PRETRAINED = report.REPO_ROOT / "pretrained"
WHY_NOT_FASTER = (
    "Why the job is no faster: the three models are compute-bound (10 musicnn passes of 3 s each per 30 s"
    " track, about 75 ms each on these 2 cores; decoding is 3 % of a track and the front ends 2 %), and T"
    "ensorFlow already spreads every pass of the plain loop over both cores. Batching equal-length tracks"
    ", decoding in parallel with inference and the `log_mel` signatures therefore change little here; bat"
    "ching matters on accelerators. Tried and not kept (see the issue note for figures): oneDNN off (same"
    " speed), TFLite with XNNPACK (slower, and non-finite outputs from the converted graph), reduced prec"
    "ision (this CPU has no bfloat16 or AVX-512 units). The lever left is musicnn's temporal convolutions"
    " (`(128|64|32) x 1` kernels on one input channel, about 2/3 of its time at a fifth of the timbral co"
    "nvolutions' FLOP rate)."
)


@dataclasses.dataclass(frozen=True)
class Row:
    """One way of embedding the catalog."""

    system: str
    tracks: int
    wall_s: float
    embeddings: dict[str, np.ndarray]

    @property
    def tracks_per_s(self) -> float:
        return self.tracks / self.wall_s


def export_defaults(work_dir: str) -> embedding_job.JobModels:
    """The shipped default models, exported as `make demo` does."""
    refs = {}
    for name in (*RANKING_MODELS, TAG_MODEL):
        path = saved_model.export(str(PRETRAINED / name), os.path.join(work_dir, "export", name), 1)
        refs[name] = exported_model.resolve(path)
    return embedding_job.JobModels(EmbeddingModels(tuple(refs[n] for n in RANKING_MODELS)), refs[TAG_MODEL])


def plain_loop(catalog: catalog_lib.Catalog, models: embedding_job.JobModels) -> Row:
    """The baseline: one track at a time through every model, in one thread."""
    loaded = {role: LoadedModel(ref) for role, ref in models.by_role.items()}
    embeddings = {}
    start = time.perf_counter()
    for entry in catalog.entries:
        try:
            source = audio.open_source(entry.uri)
            waveform, _ = load_checked_waveform(entry, models.sample_rate, AudioChecks(), source)
        except audio.AudioError:
            continue
        audio.content_sha256(source)
        outputs = {role: model.from_waveform(waveform) for role, model in loaded.items()}
        embeddings[entry.track_id] = models.features(TrackRecord(entry.track_id), outputs).embedding
    return Row("baseline: plain loop, one track at a time", len(embeddings), time.perf_counter() - start, embeddings)


def job(system: str, models, work_dir: str, **inputs) -> Row:
    """`embedding_job.embed` with its defaults, timed around the call."""
    start = time.perf_counter()
    run = embedding_job.embed(models, work_dir, **inputs)
    wall_s = time.perf_counter() - start
    return Row(system, len(run.features), wall_s, {f.track.track_id: f.embedding for f in run.features})


def preprocess(catalog: catalog_lib.Catalog, models: embedding_job.JobModels, work_dir: str) -> list[str]:
    """`data_prep` datasets in each model's log-mel variant (not timed: a catalog is preprocessed once)."""
    specs = {}
    for name in (*RANKING_MODELS, TAG_MODEL):
        spec = artifact.read_info(str(PRETRAINED / name)).log_mel
        specs[spec.fingerprint()] = spec
    dataset_dirs = []
    for fingerprint, spec in specs.items():
        output_dir = os.path.join(work_dir, f"tfrecords_{fingerprint}")
        config = pipeline.PreprocessConfig(output_dir=output_dir, log_mel=spec, split_by="track", require_tags=False)
        pipeline.run(catalog, config)
        dataset_dirs.append(output_dir)
    return dataset_dirs


def agreement(row: Row, baseline: Row) -> tuple[float, float]:
    """Smallest cosine to the baseline's embedding, and mean top-10 overlap, over the tracks both embedded."""
    ids = sorted(set(row.embeddings) & set(baseline.embeddings))
    ours = np.stack([row.embeddings[i] for i in ids])
    theirs = np.stack([baseline.embeddings[i] for i in ids])
    cosines = np.sum(ours * theirs, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    k = min(TOP_K, len(ids) - 1)

    def neighbours(embeddings):
        scores = embeddings @ embeddings.T
        np.fill_diagonal(scores, -np.inf)
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]

    overlap = [len(set(a) & set(b)) / k for a, b in zip(neighbours(ours), neighbours(theirs), strict=True)]
    return float(np.min(cosines)), float(np.mean(overlap))


def run_benchmark(command: str) -> report.Section:
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    load_at_start = report.load_average()
    path, is_fallback = preprocess_throughput.find_catalog()
    catalog = catalog_lib.read_catalog(path)
    with tempfile.TemporaryDirectory(prefix="catalog_embedding_") as work_dir:
        models = export_defaults(work_dir)
        preprocess_throughput.warm_file_cache(catalog)  # Every system finds the files in the page cache.
        dataset_dirs = preprocess(catalog, models, work_dir)
        baseline = plain_loop(catalog, models)
        rows = [
            baseline,
            job(
                f"`build_index` job, catalog CSV, {embedding_job.DEFAULT_TRACKS_PER_BATCH} tracks per batch",
                models,
                os.path.join(work_dir, "csv"),
                catalog=catalog,
            ),
            job(
                "`build_index` job, TFRecords (`log_mel` signatures), "
                f"{embedding_job.DEFAULT_TRACKS_PER_BATCH} tracks per batch",
                models,
                os.path.join(work_dir, "tfrecords"),
                dataset_dirs=dataset_dirs,
            ),
        ]
    table_rows = []
    for row in rows:
        cosine, overlap = agreement(row, baseline)
        table_rows.append(
            [
                row.system,
                row.tracks,
                f"{row.wall_s:.1f}",
                f"{row.tracks_per_s:.3f}",
                f"{row.tracks_per_s / baseline.tracks_per_s:.2f}x",
                f"{cosine:.6f}",
                f"{overlap:.3f}",
            ]
        )
    table = report.markdown_table(
        ["System", "Tracks", "Wall (s)", "Tracks/s", "vs baseline", "min cosine to baseline", "top-10 overlap"],
        table_rows,
    )
    ratios = {row.system: row.tracks_per_s / baseline.tracks_per_s for row in rows[1:]}
    notes = [
        preprocess_throughput.fallback_note(catalog, is_fallback),
        f"Models: {', '.join(RANKING_MODELS)} (ranking ensemble) and {TAG_MODEL} (tags), "
        "exported from `pretrained/` with the default chunking (10 musicnn passes and 1 CRNN pass for a 30 s track).",
        "The baseline decodes and checks each track as the job does, then calls each model's waveform signature on "
        "it alone. The job rows are timed around `embedding_job.embed` (DirectRunner, one worker thread per core); "
        "the TFRecord datasets were written beforehand by `data_prep` and are not timed. Cosine and top-10 overlap "
        "compare each row's combined embeddings with the baseline's (exact search over the catalog).",
        WHY_NOT_FASTER,
        f"**Target: at least {TARGET_RATIO:.0f}x the baseline.** "
        + "; ".join(
            f"{system}: {ratio:.2f}x ({'met' if ratio >= TARGET_RATIO else 'not met'})"
            for system, ratio in ratios.items()
        )
        + ".",
        report.load_note(load_at_start),
    ]
    return report.Section(
        name=SECTION,
        title="Catalog embedding throughput (tracks per second, shipped default models)",
        command=command,
        table=table,
        notes=notes,
    )
