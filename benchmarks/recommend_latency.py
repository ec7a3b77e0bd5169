"""End-to-end recommendation latency for one 30 s MP3 on a 10,000-track index.

The path measured is what `python -m serving.query --audio=...` and the web
service run per request, warm (models loaded, index in memory): decode the
MP3 and resample to 16 kHz (`intake.audio`), hash it, run the exported
ranking model (Short-Chunk ResNet, waveform signature: log-mel front end,
N evenly spaced chunks, chunk averaging) and the exported tag model (CRNN,
one 29 s chunk), then both recommendation stages on the index
(`serving.retrieval.recommender`). The models are the real architectures with
untrained weights (latency does not depend on the weights), exported by
`serving.export.saved_model`; the index holds 10,000 synthetic clustered 512-d
embeddings with random tag probabilities (brute force, as ScaNN's guidance
picks below 20k).

Each request is timed by stage: decode (+ hash), both models (waveform
signatures), search (the two recommendation stages). The front end
(`features.logmel` for both models) runs inside the models' graphs, so it is
timed alone on the same waveform and subtracted from the models' time to give
the forward passes. Everything but the forward passes is the overhead the
target bounds.

A second table measures the shipped defaults as users meet them: the models
`make demo` and `serving.build_index` use (`msd_musicnn` + `mtt_musicnn`
ranking as an ensemble, `mtat_crnn` tags, exported with `serving.export`'s
default chunking), once with the default `--graph=inference` exports and
once with `--graph=as_trained` (the layers as trained: the baseline),
behind `python -m serving.app` in its own process, over a
10,000-track index of synthetic 400-d ensemble embeddings; the client uploads
the 30 s MP3 to `/recommend` and waits for the answer. Stages: the service's
own `timings_ms` (decode, embed, search) and the rest (upload, HTTP, JSON).
The front ends (one log-mel per model, inside the graphs) are timed alone
and subtracted from `embed` to give the forward passes. Also in the same run:
the defaults before the chunk rule (`msd_musicnn` ranking alone, both models
at a fixed 16 chunks per track): the same request's decode, search and HTTP
time plus those two models' front ends and 16 forward passes each, run
through their `log_mel` signatures on the track's 16 evenly spaced chunks.
Against the p50 target stands what the arithmetic allows, measured in the
same run (`layer_profile.ArithmeticFloor`): the request's time outside the
forward passes plus the three models' operations at the CPU's matmul rate in
the shipped precision.

Usage:

    python -m benchmarks --only=recommend_latency [--latency_runs=30]
"""

from __future__ import annotations

import os
import pathlib
import tempfile
import time

import httpx
import keras
import numpy as np
import soundfile
import tensorflow as tf
from absl import flags

import models
from benchmarks import layer_profile, report
from benchmarks.catalog_embedding import RANKING_MODELS, TAG_MODEL, export_defaults
from benchmarks.index_search import ClusteredUnitVectors
from data_prep import pipeline
from features.logmel import LogMelSpec
from intake import audio
from models import artifact
from serving.app.child_process import app_process
from serving.embedding import query_audio
from serving.embedding.ensemble import EmbeddingModels
from serving.export import exported_model, graph_options, saved_model
from serving.export import signatures as sig
from serving.retrieval.catalog_index import CatalogIndex, TrackRecord
from serving.retrieval.recommender import Query, Recommender, TagFilter

SECTION = "recommend_latency"
CATALOG_SIZE = 10_000
CHUNKS = (1, 4, 16)
NUM_TAGS = 50
QUERY_SECONDS = 30.0
TARGET_OVERHEAD = 0.25
TARGET_DEFAULT_SPEEDUP = 2.0
TARGET_SHIPPED_RATIO = 0.40  # Upload to answer with the inference graphs, against the layers as trained.
OLD_DEFAULT_CHUNKS = 16
MODELS = {"short_chunk_res": (128, 231), "crnn": (96, 1813)}  # name: (n_mels, crop_frames)

_RUNS = flags.DEFINE_integer("latency_runs", 30, "Timed requests per setting of the recommend_latency benchmark.")


def _export(work_dir: str, name: str, num_chunks: int) -> exported_model.ModelRef:
    """An untrained tagger saved as the trainer does, then exported for serving."""
    n_mels, crop_frames = MODELS[name]
    best = os.path.join(work_dir, f"run_{name}", artifact.BEST_DIRNAME)
    if not os.path.exists(os.path.join(best, artifact.MODEL_INFO_FILENAME)):
        vocabulary = [f"tag{i:02d}" for i in range(NUM_TAGS)]
        model = models.get_model(name, num_tags=NUM_TAGS, n_mels=n_mels, vocabulary=vocabulary)
        info = artifact.ModelInfo(
            model_name=name,
            crop_frames=crop_frames,
            vocabulary=vocabulary,
            log_mel=LogMelSpec(n_mels=n_mels),
            embedding_dim=artifact.embedding_dim(model),
        )
        artifact.save(model, info, best)
    path = saved_model.export(best, os.path.join(work_dir, f"export_{num_chunks}", name), 1, num_chunks)
    return exported_model.resolve(path)


def _query_mp3(work_dir: str) -> str:
    """A 30 s, 128 kbit/s-class MP3 made from the bundled demo audio (real music)."""
    demo = sorted((report.REPO_ROOT / "demo" / "audio").glob("*.mp3"))
    pieces, sample_rate = [], 44100
    for path in demo:
        waveform, _ = audio.load_mono(str(path), str(path), sample_rate)
        pieces.append(waveform)
        if sum(p.size for p in pieces) >= QUERY_SECONDS * sample_rate:
            break
    waveform = np.concatenate(pieces)[: int(QUERY_SECONDS * sample_rate)]
    path = os.path.join(work_dir, "query.mp3")
    soundfile.write(path, waveform, sample_rate, format="MP3")
    return path


def synthetic_index(embedding_models: EmbeddingModels, tag_ref, size: int = CATALOG_SIZE) -> CatalogIndex:
    """`size` synthetic tracks indexed as if by these models (their identity, their embeddings' size)."""
    dim = sum(ref.embedding_dim for ref in embedding_models.models)
    embeddings = ClusteredUnitVectors(dim=dim).sample(size, seed=3)
    num_tags = len(tag_ref.vocabulary)
    probabilities = np.random.default_rng(4).beta(0.5, 3.0, size=(size, num_tags)).astype(np.float32)
    tracks = [
        TrackRecord(f"track{i:06d}", artist=f"artist {i % 997}", title=f"title {i}", content_sha256=f"{i:064x}")
        for i in range(size)
    ]
    return CatalogIndex.build(tracks, embeddings, probabilities, embedding_models, tag_ref)


def _timings(function, runs: int) -> np.ndarray:
    """Milliseconds per call of `function` after 3 warm-up calls."""
    for _ in range(3):
        function()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return np.array(times) * 1000.0


class _Request:
    """One warm recommendation request for an audio file, timed by stage (what `query_audio.audio_query` and
    `Recommender.recommend` do, with the stages called one by one so that each is timed in the same request)."""

    def __init__(self, mp3: str, embedding_model, tag_model, recommender: Recommender):
        self.mp3 = mp3
        self.embedding_model = embedding_model
        self.tag_model = tag_model
        self.recommender = recommender

    def __call__(self) -> tuple[float, float, float, float]:
        """Milliseconds for decode + hash, both models (front end included), search, and the whole request."""
        start = time.perf_counter()
        waveform, _, content_sha256 = query_audio.load_query_audio(self.mp3, 16000)
        decoded = time.perf_counter()
        embedding = self.embedding_model.from_waveform(waveform)[sig.EMBEDDING_OUTPUT]
        tags = self.tag_model.from_waveform(waveform)[sig.TAGS_OUTPUT]
        embedded = time.perf_counter()
        query = Query(embedding=embedding, tag_probabilities=tags, content_sha256=content_sha256)
        result = self.recommender.recommend(query, 10)
        done = time.perf_counter()
        assert len(result.recommendations) == 10
        return tuple(1000.0 * t for t in (decoded - start, embedded - decoded, done - embedded, done - start))


def _measure(work_dir: str, mp3: str, num_chunks: int, tag_ref, runs: int) -> dict[str, float]:
    embedding_ref = _export(work_dir, "short_chunk_res", num_chunks)
    catalog = synthetic_index(EmbeddingModels((embedding_ref,)), tag_ref)
    loaded = {"short_chunk_res": exported_model.LoadedModel(embedding_ref), "crnn": exported_model.LoadedModel(tag_ref)}
    request = _Request(mp3, loaded["short_chunk_res"], loaded["crnn"], Recommender(catalog, TagFilter(0.3, 3)))
    for _ in range(3):
        request()
    stages = np.array([request() for _ in range(runs)])
    # The front end alone, on the same waveform, for both models (it runs inside their graphs).
    waveform, _ = audio.load_mono(mp3, mp3, 16000)
    front_ends = [pipeline.waveform_log_mel_function(LogMelSpec(n_mels=n_mels)) for n_mels, _ in MODELS.values()]
    front_end = _timings(lambda: [f(tf.constant(waveform)).numpy() for f in front_ends], runs)
    medians = np.median(stages, axis=0)
    return {
        "p50": float(np.median(stages[:, 3])),
        "p99": float(np.percentile(stages[:, 3], 99)),
        "decode": float(medians[0]),
        "models": float(medians[1]),
        "front end": float(np.median(front_end)),
        "search": float(medians[2]),
    }


def _app_requests(base_url: str, mp3: str, runs: int) -> np.ndarray:
    """`[runs, 4]` ms: upload to answer, then the service's decode, embed and search, per request."""
    data = pathlib.Path(mp3).read_bytes()
    rows = []
    with httpx.Client(base_url=base_url, timeout=120.0) as client:
        for number in range(runs + 3):
            start = time.perf_counter()
            response = client.post("/recommend", params={"k": 10}, files={"audio": ("query.mp3", data, "audio/mpeg")})
            elapsed = 1000.0 * (time.perf_counter() - start)
            response.raise_for_status()
            timings = response.json()["timings_ms"]
            if number >= 3:  # Warm-up requests are not counted.
                rows.append([elapsed, timings["decode"], timings["embed"], timings["search"]])
    return np.array(rows)


def _info(ref) -> artifact.ModelInfo:
    """An exported model's `ModelInfo` (its `model_info.json` travels under `assets.extra/`)."""
    return artifact.read_info(os.path.join(ref.path, "assets.extra"))


def _front_ends_ms(refs, waveform: np.ndarray, runs: int) -> float:
    """The log-mel of every model (each graph computes its own), timed alone on the query's waveform."""
    functions = [pipeline.waveform_log_mel_function(_info(ref).log_mel) for ref in refs]
    return float(np.median(_timings(lambda: [f(tf.constant(waveform)).numpy() for f in functions], runs)))


def _old_default_models_ms(refs, waveform: np.ndarray, runs: int) -> float:
    """The old defaults' model time: each model's front end and 16 forward passes on its evenly spaced chunks."""
    calls = []
    for ref in refs:
        info = _info(ref)
        model = exported_model.LoadedModel(ref)
        front_end = pipeline.waveform_log_mel_function(info.log_mel)
        length = info.crop_frames
        frames = int(front_end(tf.constant(waveform)).shape[0])
        starts = [i * ((frames - length) // OLD_DEFAULT_CHUNKS) for i in range(OLD_DEFAULT_CHUNKS)]

        def call(front_end=front_end, model=model, starts=starts, length=length):
            log_mel = front_end(tf.constant(waveform)).numpy()
            model.from_log_mels(np.stack([log_mel[s : s + length] for s in starts]))

        calls.append(call)
    return float(np.median(_timings(lambda: [call() for call in calls], runs)))


def _defaults_through_the_app(work_dir: str, mp3: str, runs: int, graph: str, precision: str):
    """The shipped default models exported with `graph` and `precision`, behind `serving.app`: per-request
    figures (ms)."""
    models = export_defaults(work_dir, graph, precision)
    index_dir = os.path.join(work_dir, f"defaults_index_{graph}_{precision}")
    synthetic_index(models.embedding_models, models.tag_model).save(index_dir)
    with app_process(index_dir, None, os.path.join(work_dir, f"app_{graph}_{precision}.log")) as base_url:
        requests = _app_requests(base_url, mp3, runs)
    waveform, _ = audio.load_mono(mp3, mp3, 16000)
    refs = [*models.embedding_models.models, models.tag_model]
    medians = np.median(requests, axis=0)
    figures = {
        "p50": float(np.median(requests[:, 0])),
        "p99": float(np.percentile(requests[:, 0], 99)),
        "decode": float(medians[1]),
        "embed": float(medians[2]),
        "search": float(medians[3]),
        "front ends": _front_ends_ms(refs, waveform, runs),
    }
    figures["http"] = figures["p50"] - figures["decode"] - figures["embed"] - figures["search"]
    figures["forward"] = figures["embed"] - figures["front ends"]
    return models, waveform, figures


SHIPPED, FLOAT32_INFERENCE, AS_TRAINED, OLD = "shipped", "float32 inference", "as trained", "old"


def measure_defaults(work_dir: str, mp3: str, runs: int) -> dict[str, dict[str, float]]:
    """The shipped defaults through `serving.app` (the inference graphs at `--precision=auto`'s choice for this
    CPU), the same in float32 where that differs, the layers as trained (the baseline), and the old defaults, in
    the same run."""
    shipped_precision = graph_options.resolve_precision(graph_options.AUTO)
    settings = {AS_TRAINED: (saved_model.GRAPH_AS_TRAINED, graph_options.FLOAT32)}
    if shipped_precision != graph_options.FLOAT32:
        settings[FLOAT32_INFERENCE] = (saved_model.GRAPH_INFERENCE, graph_options.FLOAT32)
    settings[SHIPPED] = (saved_model.GRAPH_INFERENCE, shipped_precision)
    measured = {}
    for key, (graph, precision) in settings.items():
        models, waveform, measured[key] = _defaults_through_the_app(work_dir, mp3, runs, graph, precision)
        measured[key]["precision"] = precision
        if key == AS_TRAINED:  # The old defaults ran the layers as trained.
            as_trained = measured[key]
            old_refs = [models.embedding_models.models[0], models.tag_model]
            old_models = _old_default_models_ms(old_refs, waveform, runs)
            measured[OLD] = {
                **as_trained,
                "embed": old_models,
                "p50": as_trained["p50"] - as_trained["embed"] + old_models,
            }
    return measured


def defaults_table(measured: dict[str, dict[str, float]], runs: int) -> tuple[str, list[str]]:
    """The shipped-defaults table and its notes."""
    shipped, as_trained, old = (measured[k] for k in (SHIPPED, AS_TRAINED, OLD))

    def row(label, figures, full=True):
        share = figures["forward"] / figures["p50"] if full else None
        return [
            label,
            f"{figures['p50']:.0f}",
            f"{figures['p99']:.0f}" if full else "",
            f"{shipped['p50'] / figures['p50']:.2f}",
            f"{figures['decode']:.1f}",
            f"{figures['embed']:.0f}",
            f"{figures['front ends']:.1f}" if full else "",
            f"{figures['forward']:.0f} ({share:.0%})" if full else "",
            f"{figures['search']:.1f}",
            f"{figures['http']:.1f}",
        ]

    defaults = "msd_musicnn + mtt_musicnn (ensemble) + mtat_crnn, chunks by track length"
    rows = [
        row(
            f"shipped defaults: {defaults}, `--graph=inference` exports, `--precision=auto` on this CPU: "
            f"{shipped['precision']}",
            shipped,
        ),
    ]
    if FLOAT32_INFERENCE in measured:
        rows.append(row("the same, `--precision=float32`", measured[FLOAT32_INFERENCE]))
    rows += [
        row("baseline: the same models, `--graph=as_trained` exports (the layers as trained)", as_trained),
        row(f"old defaults: msd_musicnn + mtat_crnn at {OLD_DEFAULT_CHUNKS} chunks each, as trained", old, full=False),
    ]
    table = report.markdown_table(
        [
            "Setting (through `serving.app`)",
            "upload to answer p50 (ms)",
            "p99 (ms)",
            "shipped p50 / this p50",
            "decode + hash",
            "embed (all models)",
            "of which front ends",
            "forward passes (share of p50)",
            "search, 2 stages",
            "upload, HTTP, JSON",
        ],
        rows,
    )
    share = shipped["forward"] / shipped["p50"]
    ratio = shipped["p50"] / as_trained["p50"]
    speedup = old["p50"] / shipped["p50"]
    notes = [
        f"Shipped defaults: `python -m serving.app` in its own process over a {CATALOG_SIZE:,}-track index of "
        "synthetic ensemble embeddings (400-d), models in-process; one client uploads the same 30 s MP3 to "
        f"`/recommend?k=10`, {runs} timed requests after 3 warm-up ones, once per export graph (a service of its "
        "own each). Stage times are medians of the service's own `timings_ms`; 'upload, HTTP, JSON' is the p50 "
        "minus them. The embedders run the three models concurrently. The old defaults' row uses the as-trained "
        f"run's decode, search and HTTP times and measures its models (front end + {OLD_DEFAULT_CHUNKS} forward "
        "passes each, in one thread) on the same waveform.",
        f"Targets: p50 at most {TARGET_SHIPPED_RATIO:.0%} of the as-trained graphs' -> {ratio:.0%} "
        f"(**{'met' if ratio <= TARGET_SHIPPED_RATIO else 'not met'}**); forward passes >= 75% of p50 -> "
        f"{share:.0%} (**{'met' if share >= 0.75 else 'not met'}**); p50 at most half the old defaults' -> "
        f"{speedup:.2f}x faster (**{'met' if speedup >= TARGET_DEFAULT_SPEEDUP else 'not met'}**).",
    ]
    return table, notes


def floor_note(floor: layer_profile.ArithmeticFloor, measured: dict[str, dict[str, float]]) -> str:
    """What the shipped models' arithmetic allows for one upload on this CPU against the p50 target."""
    shipped, as_trained = measured[SHIPPED], measured[AS_TRAINED]
    rest = shipped["p50"] - shipped["forward"]  # Decode, front ends, search, HTTP: unchanged by faster models.
    target = TARGET_SHIPPED_RATIO * as_trained["p50"]
    floor_ms = floor.seconds_per_track * 1e3
    best = (rest + floor_ms) / as_trained["p50"]
    needed = floor.share_needed((target - rest) / 1e3) if target > rest else float("inf")
    achieved = floor.share_needed(shipped["forward"] / 1e3)
    verdict = (
        "**no formulation of this arithmetic meets the target here**"
        if needed > 1.0
        else f"the forward passes would have to run at {needed:.0%} of that rate"
    )
    return (
        f"**What the arithmetic allows on this CPU** (same run): {floor.describe()}. The shipped request spends "
        f"{rest:.0f} ms outside the forward passes; with the forward passes at the matrix-product rate its p50 "
        f"would be {rest + floor_ms:.0f} ms, {best:.0%} of the as-trained p50 (target at most "
        f"{TARGET_SHIPPED_RATIO:.0%}): {verdict}. They run at {achieved:.0%} of it now."
    )


def run_benchmark(command: str) -> report.Section:
    """Runs the benchmark and returns its section of BENCHMARKS.md."""
    load_at_start = report.load_average()
    keras.utils.set_random_seed(0)
    rows, verdicts = [], []
    with tempfile.TemporaryDirectory() as work_dir:
        mp3 = _query_mp3(work_dir)
        defaults = measure_defaults(work_dir, mp3, _RUNS.value)
        tag_ref = _export(work_dir, "crnn", 1)
        for num_chunks in CHUNKS:
            figures = _measure(work_dir, mp3, num_chunks, tag_ref, _RUNS.value)
            forward = figures["models"] - figures["front end"]
            overhead = figures["p50"] - forward
            share = overhead / figures["p50"]
            verdicts.append(share <= TARGET_OVERHEAD)
            rows.append(
                (
                    num_chunks,
                    f"{figures['p50']:.0f}",
                    f"{figures['p99']:.0f}",
                    f"{figures['decode']:.1f}",
                    f"{figures['models']:.0f}",
                    f"{figures['front end']:.1f}",
                    f"{forward:.0f}",
                    f"{figures['search']:.1f}",
                    f"{overhead:.0f} ({share:.0%})",
                )
            )
    table = report.markdown_table(
        [
            "ResNet chunks",
            "end-to-end p50 (ms)",
            "p99 (ms)",
            "decode + hash",
            "both models",
            "of which front end",
            "forward passes",
            "search, 2 stages",
            "p50 minus forward passes (share of p50)",
        ],
        rows,
    )
    notes = [
        f"One warm request = decode a {QUERY_SECONDS:.0f} s MP3 (44.1 kHz, made from the bundled demo audio) -> "
        "16 kHz -> Short-Chunk ResNet (N chunks of 3.7 s) and CRNN (one 29 s chunk) SavedModels in-process -> "
        f"tag filter + ranking over {CATALOG_SIZE:,} tracks -> top 10. {_RUNS.value} timed requests per row after "
        "3 warm-up ones. Decode, models and search are medians (ms) of each stage timed inside the same requests; "
        "the front end (log-mel for both models, part of the models' graphs) is timed alone on the same waveform, "
        "and the forward passes are the models' time minus it.",
        "Baseline: the forward passes themselves, measured in the same run; the last column is everything else "
        "(decode, front end, search, glue) as a share of the end-to-end p50.",
        f"Target: everything but the forward passes <= {TARGET_OVERHEAD:.0%} of p50 -> "
        + ", ".join(f"{n} chunks: **{'met' if ok else 'not met'}**" for n, ok in zip(CHUNKS, verdicts, strict=True))
        + ".",
    ]
    defaults_rows, defaults_notes = defaults_table(defaults, _RUNS.value)
    floor = layer_profile.arithmetic_floor((*RANKING_MODELS, TAG_MODEL), defaults[SHIPPED]["precision"])
    notes += [
        "**Shipped defaults, upload to answer:**\n\n" + defaults_rows,
        *defaults_notes,
        floor_note(floor, defaults),
    ]
    notes.append(report.load_note(load_at_start))
    return report.Section(
        name=SECTION,
        title=f"End-to-end recommendation latency (30 s MP3, {CATALOG_SIZE:,}-track index)",
        command=command,
        table=table,
        notes=notes,
    )
