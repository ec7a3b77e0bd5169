r"""Training-input throughput in chunks per second, against the research loader.

Usage:

    python -m benchmarks.reader_throughput [--measure_s=4] [--warmup_batches=5] \
        [--crops_per_track=1,4,8,16] [--cache_crops_per_track=1] [--output=BENCHMARKS.md]

The catalog (see `benchmarks.preprocess_throughput.find_catalog`) is
preprocessed once, untimed, into a temporary directory: uncompressed (the
default) and with GZIP. `tfrecords.readers.train_dataset` then delivers
batches of 64 log-mel chunks (231 frames x 128 bands) of the train split for
each `crops_per_track` K, each measured for `--measure_s` seconds after
`--warmup_batches` batches; one extra row uses `cache=True`.

Baseline (the research system's loader): the same train tracks saved
beforehand as one float32 16 kHz `.npy` waveform each (decoded with soundfile
and resampled with soxr, untimed); a Python loop then takes each track in a
shuffled order, `np.load(path, mmap_mode='r')`, picks a random start, copies
59,049 samples into an array and stacks 64 of them into a batch.
"""

from __future__ import annotations

from tf_startup import run

import dataclasses
import itertools
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence

import numpy as np
import soundfile
import soxr
import tensorflow as tf
from absl import flags

from benchmarks import preprocess_throughput, report
from data_prep import pipeline
from intake import catalog as catalog_lib
from tfrecords import dataset_info, readers

SECTION = "reader_throughput"
SAMPLE_RATE = 16000
CROP_FRAMES = 231
CROP_SAMPLES = 59049
TARGET_CHUNKS_PER_S = 10_000
TARGET_RATIO = 3.0
COMPRESSIONS = ("", "GZIP")

_MEASURE_S = flags.DEFINE_float("measure_s", 4.0, "Seconds each configuration is measured for.")
_WARMUP_BATCHES = flags.DEFINE_integer("warmup_batches", 5, "Batches read before the clock starts.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Global batch size.")
_CROPS_PER_TRACK = flags.DEFINE_list("crops_per_track", ["1", "4", "8", "16"], "The K values measured.")
_CACHE_CROPS_PER_TRACK = flags.DEFINE_integer("cache_crops_per_track", 1, "K of the extra cache=True row.")


@dataclasses.dataclass(frozen=True)
class Result:
    """One measured input pipeline.

    Attributes:
        system: Which loader.
        data: What it reads.
        crops_per_track: Chunks taken per track read.
        chunks_per_s: Chunks delivered per second.
        is_baseline: Whether this is the research loader.
    """

    system: str
    data: str
    crops_per_track: int
    chunks_per_s: float
    is_baseline: bool = False


def chunks_per_second(batches: Iterator, warmup_batches: int, seconds: float) -> float:
    """Reads `warmup_batches` batches, then counts chunks for `seconds`.

    Args:
        batches: Yields `(chunks, labels)` with the chunks on the first axis.
        warmup_batches: Batches read before the clock starts.
        seconds: How long to measure.

    Returns:
        Chunks per second over the measured batches.
    """
    for _ in range(warmup_batches):
        next(batches)
    chunks, start = 0, time.perf_counter()
    while True:
        chunks += int(next(batches)[0].shape[0])
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return chunks / elapsed


def preprocess(catalog: catalog_lib.Catalog, root: str) -> dict[str, str]:
    """Writes the dataset once per compression; returns `{compression: dir}`."""
    dirs = {}
    for compression in COMPRESSIONS:
        output_dir = os.path.join(root, f"tfrecords_{compression or 'none'}")
        config = pipeline.PreprocessConfig(output_dir=output_dir, split_by="track", compression=compression)
        pipeline.run(catalog, config, [])
        dirs[compression] = output_dir
    return dirs


def dataset_bytes(dataset_dir: str, split: str = "train") -> int:
    """Bytes on disk of a split's shards."""
    info = dataset_info.load(dataset_dir)
    return sum(tf.io.gfile.stat(path).length for path in dataset_info.shard_paths(dataset_dir, info, split))


def train_tracks(dataset_dir: str) -> tuple[list[str], np.ndarray]:
    """Track ids and label vectors of the train split, in file order."""
    track_ids, labels = [], []
    for item in readers.eval_dataset(dataset_dir, split="train", chunk_frames=CROP_FRAMES, num_chunks=1):
        track_ids.append(item["track_id"].numpy().decode("utf-8"))
        labels.append(item["labels"].numpy())
    return track_ids, np.stack(labels).astype(np.float32)


def decode_to_npy(uri: str, path: str):
    """Decodes, downmixes and resamples one file to a float32 16 kHz `.npy`.

    Tracks shorter than one chunk are padded with silence so that the
    baseline can crop every track.
    """
    samples, rate = soundfile.read(uri, dtype="float32", always_2d=True)
    waveform = soxr.resample(samples.mean(axis=1), rate, SAMPLE_RATE).astype(np.float32)
    if waveform.size < CROP_SAMPLES:
        waveform = np.pad(waveform, (0, CROP_SAMPLES - waveform.size))
    np.save(path, waveform)


def save_waveforms(catalog: catalog_lib.Catalog, track_ids: Sequence[str], out_dir: str) -> list[str]:
    """The baseline's preprocessing, untimed: one `.npy` per train track."""
    uri_of = {entry.track_id: entry.uri for entry in catalog.entries}
    paths = []
    for i, track_id in enumerate(track_ids):
        path = os.path.join(out_dir, f"{i:06d}.npy")
        decode_to_npy(uri_of[track_id], path)
        paths.append(path)
    return paths


def load_crop(path: str, rng: np.random.Generator) -> np.ndarray:
    """The research loader's item: a random 59,049-sample crop of a mmap'ed `.npy`."""
    waveform = np.load(path, mmap_mode="r")
    start = int(rng.integers(0, len(waveform) - CROP_SAMPLES + 1))
    return np.array(waveform[start : start + CROP_SAMPLES])


def baseline_batches(
    paths: Sequence[str], labels: np.ndarray, batch_size: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches `(waveforms [B, 59049], labels [B, T])` in a Python loop."""
    order = itertools.chain.from_iterable(rng.permutation(len(paths)) for _ in itertools.count())
    while True:
        indices = list(itertools.islice(order, batch_size))
        yield np.stack([load_crop(paths[i], rng) for i in indices]), labels[indices]


def measure_baseline(paths: Sequence[str], labels: np.ndarray, when: str) -> Result:
    """Chunks per second of the research loader; `when` names the measurement."""
    batches = baseline_batches(paths, labels, _BATCH_SIZE.value, np.random.default_rng(0))
    rate = chunks_per_second(batches, _WARMUP_BATCHES.value, _MEASURE_S.value)
    return Result(f"research loader: `np.load(mmap)` + crop, Python loop ({when})", ".npy waveforms", 1, rate, True)


def reference(baselines: Sequence[Result]) -> Result:
    """The baseline that ratios refer to: the mean of its measurements."""
    rate = sum(b.chunks_per_s for b in baselines) / len(baselines)
    return Result("research loader (mean)", ".npy waveforms", 1, rate, True)


def measure_reader(dataset_dir: str, compression: str, crops_per_track: int, cache: bool = False) -> Result:
    """Chunks per second of `train_dataset` with one setting."""
    dataset = readers.train_dataset(
        dataset_dir, crop_frames=CROP_FRAMES, crops_per_track=crops_per_track, global_batch_size=_BATCH_SIZE.value
    )
    iterator = iter(dataset)
    rate = chunks_per_second(iterator, _WARMUP_BATCHES.value, _MEASURE_S.value)
    del iterator  # Stops the input pipeline's background threads.
    system = "`train_dataset`" + (", `cache=True`" if cache else "")
    return Result(system, f"TFRecords, {compression or 'uncompressed'}", crops_per_track, rate)


def meets_target(result: Result, baseline: Result) -> bool:
    return result.chunks_per_s >= TARGET_CHUNKS_PER_S and result.chunks_per_s >= TARGET_RATIO * baseline.chunks_per_s


def results_table(baselines: Sequence[Result], ours: Sequence[Result]) -> str:
    """The markdown table, ratios against the mean of the baseline measurements."""
    baseline = reference(baselines)
    rows = []
    for result in [*baselines, *ours]:
        ratio = result.chunks_per_s / baseline.chunks_per_s
        verdict = (
            "(baseline, mean is the reference)"
            if result.is_baseline
            else ("met" if meets_target(result, baseline) else "not met")
        )
        rows.append(
            [
                result.system,
                result.data,
                result.crops_per_track,
                f"{result.chunks_per_s:,.0f}",
                f"{ratio:.2f}x",
                verdict,
            ]
        )
    header = ["Loader", "Reads", "K (crops per track)", "Chunks per s", "vs baseline", "Target"]
    return report.markdown_table(header, rows)


def target_note(baselines: Sequence[Result], ours: Sequence[Result]) -> str:
    """Says plainly which configurations meet the target."""
    baseline = reference(baselines)
    met = [r for r in ours if meets_target(r, baseline)]
    text = (
        f"**Target: at least {TARGET_CHUNKS_PER_S:,} chunks/s and at least {TARGET_RATIO:g}x the baseline "
        f"({TARGET_RATIO * baseline.chunks_per_s:,.0f} chunks/s here, from the baseline's mean of "
        f"{baseline.chunks_per_s:,.0f}).** "
    )
    if not met:
        return text + "Not met by any configuration."
    names = "; ".join(f"{r.data} K={r.crops_per_track}{' cache' if 'cache' in r.system else ''}" for r in met)
    return text + f"Met by {len(met)} of {len(ours)} configurations: {names}."


def run_benchmark(command: str) -> report.Section:
    """Preprocesses once, measures every loader and returns the section."""
    preprocess_throughput.quiet_logs()
    load_at_start = report.load_average()
    path, is_fallback = preprocess_throughput.find_catalog()
    catalog = catalog_lib.read_catalog(path)
    with tempfile.TemporaryDirectory(prefix="reader_bench_") as root:
        logging.info("preprocessing %s (untimed)", path)
        dirs = preprocess(catalog, root)
        track_ids, labels = train_tracks(dirs[""])
        waveform_dir = os.path.join(root, "npy")
        os.makedirs(waveform_dir)
        paths = save_waveforms(catalog, track_ids, waveform_dir)
        baselines = [measure_baseline(paths, labels, "first")]
        ours = []
        for compression in COMPRESSIONS:
            for crops_per_track in (int(k) for k in _CROPS_PER_TRACK.value):
                ours.append(measure_reader(dirs[compression], compression, crops_per_track))
                logging.info("%s", ours[-1])
        ours.append(measure_reader(dirs[""], "", _CACHE_CROPS_PER_TRACK.value, cache=True))
        baselines.append(measure_baseline(paths, labels, "again, last"))
        sizes = {compression: dataset_bytes(directory) for compression, directory in dirs.items()}
    notes = [
        _data_note(catalog, is_fallback, track_ids, sizes),
        f"A chunk is one training example: {CROP_FRAMES} log-mel frames x 128 bands from `train_dataset`, "
        f"{CROP_SAMPLES:,} waveform samples from the baseline (whose model computes the log-mel on the "
        f"accelerator). Batches of {_BATCH_SIZE.value}; each row measured for {_MEASURE_S.value:g} s after "
        f"{_WARMUP_BATCHES.value} warm-up batches, single run. The cache row reads uncompressed shards. The baseline is measured first and last; the "
        "ratios use the mean, and the gap between the two shows how much the machine's load drifted.",
        report.load_note(load_at_start),
        target_note(baselines, ours),
    ]
    return report.Section(
        name=SECTION,
        title="Training-input throughput (chunks per second)",
        command=command,
        table=results_table(baselines, ours),
        notes=notes,
    )


def _data_note(catalog: catalog_lib.Catalog, is_fallback: bool, track_ids: Sequence[str], sizes: dict) -> str:
    return (
        preprocess_throughput.fallback_note(catalog, is_fallback)
        + f" Train split: {len(track_ids)} tracks; shards {sizes[''] / 2**20:.1f} MiB uncompressed, "
        f"{sizes['GZIP'] / 2**20:.1f} MiB GZIP."
    )


def main(argv):
    del argv
    print(report.update_section(run_benchmark(report.invocation("benchmarks.reader_throughput"))))


if __name__ == "__main__":
    run(main)
