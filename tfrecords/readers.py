"""tf.data input pipelines over the preprocessed TFRecords.

Two modes:

* `train_dataset`: shards are read interleaved and shuffled, each track read
  yields `crops_per_track` random fixed-length crops (shorter tracks are
  padded with the log-mel of silence), crops are shuffled, optionally
  SpecAugment-masked, batched and prefetched. Under a `tf.distribute`
  strategy pass the `tf.distribute.InputContext` that
  `strategy.distribute_datasets_from_function` provides: shards are then
  split between input pipelines and the global batch between replicas.
* `eval_dataset`: every track once, in file order, as evenly spaced chunks
  (the Won et al. evaluation: chunk `i` of `n` starts at
  `i * ((frames - chunk_frames) // n)`), with its track id and labels, so
  that predictions can be averaged per track. Deterministic.

How many chunks a track gets is `chunk_count`: enough to leave no gap
between consecutive chunks, at most `max_chunks`: a track no longer than two
chunks gets one pass (a 30 s preview through the CRNN's 29 s input), a
10-minute one the full count. The exported serving graph uses the same rule.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfrecords import dataset_info as dataset_info_lib
from tfrecords import schema

AUTOTUNE = tf.data.AUTOTUNE
NUM_CHUNKS = "num_chunks"  # eval_dataset: how many of a track's chunks are real (the rest is padding).


@dataclasses.dataclass(frozen=True)
class SpecAugment:
    """SpecAugment-style masking (Park et al. 2019) of a log-mel crop.

    Masked cells are set to the crop's mean, so masking does not shift the
    input statistics the way a zero (a loud value in dB) would.

    Attributes:
        num_time_masks: Number of time masks.
        max_time_mask_frames: Maximum width of a time mask in frames.
        num_freq_masks: Number of frequency masks.
        max_freq_mask_bins: Maximum width of a frequency mask in mel bins.
    """

    num_time_masks: int = 2
    max_time_mask_frames: int = 20
    num_freq_masks: int = 2
    max_freq_mask_bins: int = 16

    def __call__(self, log_mel: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Masks one `[frames, n_mels]` crop; `seed` is a stateless seed `[2]`."""
        frames, bins = tf.shape(log_mel)[0], tf.shape(log_mel)[1]
        mean = tf.reduce_mean(log_mel)
        keep = tf.ones_like(log_mel, dtype=tf.bool)
        seeds = tf.random.experimental.stateless_split(seed, self.num_time_masks + self.num_freq_masks)
        for i in range(self.num_time_masks):
            keep &= _band_mask(frames, self.max_time_mask_frames, seeds[i])[:, tf.newaxis]
        for i in range(self.num_freq_masks):
            keep &= _band_mask(bins, self.max_freq_mask_bins, seeds[self.num_time_masks + i])[tf.newaxis, :]
        return tf.where(keep, log_mel, mean)


def _band_mask(length: tf.Tensor, max_width: int, seed: tf.Tensor) -> tf.Tensor:
    """A boolean vector that is False on one random band of width < max_width."""
    width_seed, start_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    width = tf.random.stateless_uniform([], width_seed, 0, max_width + 1, dtype=tf.int32)
    width = tf.minimum(width, length)
    start = tf.random.stateless_uniform([], start_seed, 0, length - width + 1, dtype=tf.int32)
    positions = tf.range(length)
    return (positions < start) | (positions >= start + width)


def repeat_to_frames(log_mel: tf.Tensor, num_frames: int) -> tf.Tensor:
    """A track `[frames, n_mels]` shorter than `num_frames` repeated up to `num_frames` (longer ones as they are).

    Repeating (musicnn's `repeat-pad`) rather than padding with silence: a
    recurrent tagger summarises its last steps (the CRNN's last GRU output),
    so a 15 s preview padded to the CRNN's 29 s with silence loses most of
    its tags; repeated, it keeps the music's statistics.
    """
    frames = tf.maximum(tf.shape(log_mel)[0], 1)
    repeats = (num_frames + frames - 1) // frames
    return tf.tile(log_mel, [tf.maximum(repeats, 1), 1])[: tf.maximum(num_frames, frames)]


def random_crops(log_mel: tf.Tensor, crop_frames: int, num_crops: int, seed: tf.Tensor) -> tf.Tensor:
    """`num_crops` random crops `[num_crops, crop_frames, n_mels]` of one track."""
    log_mel = repeat_to_frames(log_mel, crop_frames)
    max_start = tf.shape(log_mel)[0] - crop_frames
    starts = tf.random.stateless_uniform([num_crops], seed, 0, max_start + 1, dtype=tf.int32)
    offsets = starts[:, tf.newaxis] + tf.range(crop_frames)[tf.newaxis, :]
    return tf.gather(log_mel, offsets)


def chunk_count(num_frames, chunk_frames: int, max_chunks: int) -> tf.Tensor:
    """How many evenly spaced chunks a track of `num_frames` frames gets: `ceil(frames / chunk) - 1`, in [1, max].

    With chunk `i` of `n` starting at `i * ((frames - chunk) // n)`, that is
    the fewest chunks that leave no gap between consecutive ones (hop ≤
    chunk), and consecutive chunks of a track longer than two chunks overlap
    by less than half a chunk. Fewer chunks than that would skip music; more
    would run the model again over what it already saw (16 chunks of 29 s
    on a 30 s preview are 16 passes over nearly the same audio). A track at
    least `max_chunks + 1` chunks long gets `max_chunks`, exactly as before.
    """
    num_frames = tf.maximum(tf.cast(num_frames, tf.int32), chunk_frames)  # Shorter tracks are repeated to a chunk.
    needed = (num_frames + chunk_frames - 1) // chunk_frames - 1
    return tf.clip_by_value(needed, 1, max_chunks)


def evenly_spaced_chunks(log_mel: tf.Tensor, chunk_frames: int, max_chunks: int) -> tf.Tensor:
    """The Won et al. evaluation chunks `[n, chunk_frames, n_mels]`, `n = chunk_count(frames, ...)`."""
    log_mel = repeat_to_frames(log_mel, chunk_frames)
    frames = tf.shape(log_mel)[0]
    num_chunks = chunk_count(frames, chunk_frames, max_chunks)
    hop = (frames - chunk_frames) // num_chunks
    starts = tf.range(num_chunks) * hop
    offsets = starts[:, tf.newaxis] + tf.range(chunk_frames)[tf.newaxis, :]
    return tf.gather(log_mel, offsets)


def shard_files(dataset_dir: str, info: dataset_info_lib.DatasetInfo, split: str) -> list[str]:
    """A split's shard paths; a split without examples is an error naming it."""
    files = dataset_info_lib.shard_paths(dataset_dir, info, split)
    if not files:
        raise ValueError(f"{dataset_dir}: split {split!r} has no examples")
    return files


def example_parser(info: dataset_info_lib.DatasetInfo, cast_log_mel: bool = True, teacher: bool = False):
    """`schema.parse_example` for this dataset's shapes; `teacher` parses a distillation dataset's targets too."""
    if teacher and info.teacher is None:
        raise ValueError("the dataset has no teacher targets (python -m train.compute_teacher_targets writes them)")
    teacher_sizes = info.teacher.sizes if teacher else None

    def parse(serialized):
        return schema.parse_example(
            serialized,
            info.vocabulary,
            info.log_mel.n_mels,
            info.log_mel_dtype,
            cast_log_mel=cast_log_mel,
            teacher_sizes=teacher_sizes,
        )

    return parse


def train_dataset(
    dataset_dir: str,
    *,
    split: str = "train",
    crop_frames: int = 231,
    crops_per_track: int = 1,
    global_batch_size: int = 16,
    shuffle_buffer: int = 1024,
    seed: int | None = None,
    spec_augment: SpecAugment | None = None,
    input_context: tf.distribute.InputContext | None = None,
    repeat: bool = True,
    cache: bool = False,
    info: dataset_info_lib.DatasetInfo | None = None,
) -> tf.data.Dataset:
    """Random crops for training.

    Args:
        dataset_dir: A directory written by `python -m data_prep`.
        split: The split to read.
        crop_frames: Frames per crop (231 = 59,049 samples for the short-chunk
            models, 1813 = 29 s for the CRNN).
        crops_per_track: Random crops taken from each track read (1 is the Won
            et al. recipe; more amortises reading a whole track).
        global_batch_size: Batch size summed over all replicas.
        shuffle_buffer: Crops in the shuffle buffer.
        seed: Makes the order and the crops reproducible; None is faster.
        spec_augment: Optional masking applied to each crop.
        input_context: From `strategy.distribute_datasets_from_function`.
        repeat: Repeat forever (epochs are then counted in steps).
        cache: Cache the parsed tracks in memory (small datasets).
        info: The dataset's info, if already loaded.

    Returns:
        A dataset of `(log_mel [batch, crop_frames, n_mels], labels [batch,
        num_tags])` float32 pairs, with the per-replica batch size.
    """
    info = info or dataset_info_lib.load(dataset_dir)
    if not info.num_tags:
        raise ValueError(f"{dataset_dir} has no tags: read it with views_dataset (self-supervised training)")
    reading = _read_tracks(dataset_dir, info, split, global_batch_size, shuffle_buffer, seed, input_context, cache)
    tracks = reading.tracks.map(lambda parsed: (parsed[schema.LOG_MEL], parsed[schema.LABELS]))
    if repeat:
        tracks = tracks.repeat()
    batch_size, deterministic = reading.batch_size, reading.deterministic
    seeds = tf.data.Dataset.random(seed=seed).batch(2, drop_remainder=True)

    def crop(track, crop_seed):
        log_mel, labels = track
        crops = random_crops(log_mel, crop_frames, crops_per_track, crop_seed)
        if spec_augment is not None:
            crops = tf.cast(crops, tf.float32)
            augment_seeds = tf.random.experimental.stateless_split(crop_seed, crops_per_track)
            crops = tf.map_fn(
                lambda args: spec_augment(args[0], args[1]),
                (crops, augment_seeds),
                fn_output_signature=tf.float32,
            )
        return crops, tf.repeat(labels[tf.newaxis, :], crops_per_track, axis=0)

    chunks = (
        tf.data.Dataset.zip((tracks, seeds))
        .map(crop, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
        .unbatch()
    )
    chunks = chunks.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    batches = chunks.batch(batch_size, drop_remainder=True, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    batches = batches.map(lambda log_mel, labels: (tf.cast(log_mel, tf.float32), labels))
    return _finish(batches, deterministic, input_context)


@dataclasses.dataclass(frozen=True)
class _TrackReading:
    tracks: tf.data.Dataset  # Parsed examples, log-mel in its storage dtype, shuffled when cached.
    batch_size: int  # Per replica.
    deterministic: bool


def _read_tracks(
    dataset_dir, info, split, global_batch_size, shuffle_buffer, seed, input_context, cache, teacher=False
):
    """The tracks of one split for this input pipeline: files split between pipelines, shuffled."""
    files = shard_files(dataset_dir, info, split)
    batch_size = global_batch_size
    deterministic = seed is not None
    files_dataset = tf.data.Dataset.from_tensor_slices(files)
    records_need_sharding = False
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(global_batch_size)
        if len(files) >= input_context.num_input_pipelines:
            # Whole files per input pipeline. When the file count is not a
            # multiple of the pipelines, some see one file more per epoch.
            files_dataset = files_dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        else:
            # Fewer files than pipelines: every pipeline reads all records in
            # the same order and keeps every n-th one.
            records_need_sharding = True
    if not cache and not records_need_sharding:
        files_dataset = files_dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    records = files_dataset.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type=info.compression),
        cycle_length=min(len(files), 8),
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic or records_need_sharding,
    )
    if records_need_sharding:
        records = records.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    parse = example_parser(info, cast_log_mel=False, teacher=teacher)
    tracks = records.map(parse, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if cache:
        tracks = tracks.cache()
        tracks = tracks.shuffle(min(shuffle_buffer, 4096), seed=seed, reshuffle_each_iteration=True)
    return _TrackReading(tracks, batch_size, deterministic)


def _finish(batches: tf.data.Dataset, deterministic: bool, input_context) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = deterministic
    if input_context is not None:
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    else:
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.AUTO
    return batches.with_options(options).prefetch(AUTOTUNE)


def views_dataset(
    dataset_dir: str,
    *,
    view_fn,
    split: str = "train",
    views_per_track: int = 2,
    global_batch_size: int = 16,
    shuffle_buffer: int = 1024,
    seed: int | None = None,
    input_context: tf.distribute.InputContext | None = None,
    repeat: bool = True,
    cache: bool = False,
    info: dataset_info_lib.DatasetInfo | None = None,
    teacher: bool = False,
) -> tf.data.Dataset:
    """Batches of tracks, each seen as `views_per_track` random views (self-supervised training).

    Unlike `train_dataset`, a batch holds distinct tracks (the other tracks
    of a batch are a view's negatives): tracks are shuffled, viewed and
    batched within an epoch, and the last incomplete batch of each epoch is
    dropped, so a track never meets itself as a negative.

    Args:
        dataset_dir: A directory written by `python -m data_prep`.
        view_fn: `(parsed_example, seed [2]) -> dict of per-view tensors`
            (e.g. a `log_mel` view `[crop_frames, n_mels]`); called once per
            view, with independent seeds.
        split: The split to read.
        views_per_track: Views of each track (2: a positive pair).
        global_batch_size: Tracks per batch summed over all replicas.
        shuffle_buffer: Tracks in the shuffle buffer.
        seed: Makes the order and the views reproducible; None is faster.
        input_context: From `strategy.distribute_datasets_from_function`.
        repeat: Repeat forever (epochs are then counted in steps).
        cache: Cache the parsed tracks in memory (small datasets).
        info: The dataset's info, if already loaded.
        teacher: Parse the teacher features too (a distillation dataset).

    Returns:
        A dataset of dicts of `[batch, views_per_track, ...]` tensors, with
        the per-replica batch size.
    """
    info = info or dataset_info_lib.load(dataset_dir)
    reading = _read_tracks(
        dataset_dir, info, split, global_batch_size, shuffle_buffer, seed, input_context, cache, teacher
    )
    tracks = reading.tracks
    if not cache:
        tracks = tracks.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2, drop_remainder=True)

    def views(parsed, track_seed):
        view_seeds = tf.random.experimental.stateless_split(track_seed, views_per_track)
        per_view = [view_fn(parsed, view_seeds[i]) for i in range(views_per_track)]
        return {name: tf.stack([view[name] for view in per_view]) for name in per_view[0]}

    batches = tf.data.Dataset.zip((tracks, seeds)).map(
        views, num_parallel_calls=AUTOTUNE, deterministic=reading.deterministic
    )
    batches = batches.batch(reading.batch_size, drop_remainder=True)
    if repeat:
        batches = batches.repeat()
    return _finish(batches, reading.deterministic, input_context)


def eval_dataset(
    dataset_dir: str,
    *,
    split: str = "valid",
    chunk_frames: int = 231,
    num_chunks: int = 16,
    info: dataset_info_lib.DatasetInfo | None = None,
) -> tf.data.Dataset:
    """Every track once, as evenly spaced chunks, in a deterministic order.

    Args:
        dataset_dir: A directory written by `python -m data_prep`.
        split: The split to read.
        chunk_frames: Frames per chunk.
        num_chunks: The most chunks per track (16 in the Won et al.
            evaluation); shorter tracks get fewer (`chunk_count`).
        info: The dataset's info, if already loaded.

    Returns:
        A dataset of dicts, one per track: `track_id` (string), `log_mel`
        `[n, chunk_frames, n_mels]` (`n` = `chunk_count` of the track; batch
        with `padded_batch` and mask by `num_chunks`), `num_chunks`,
        `labels` `[num_tags]`, `artist`, `album`, `title`, `tags` and
        `duration_s`.
    """
    info = info or dataset_info_lib.load(dataset_dir)
    files = shard_files(dataset_dir, info, split)

    def to_chunks(parsed):
        chunks = evenly_spaced_chunks(parsed[schema.LOG_MEL], chunk_frames, num_chunks)
        return {
            schema.TRACK_ID: parsed[schema.TRACK_ID],
            schema.LOG_MEL: chunks,
            NUM_CHUNKS: tf.shape(chunks)[0],
            schema.LABELS: parsed[schema.LABELS],
            schema.ARTIST: parsed[schema.ARTIST],
            schema.ALBUM: parsed[schema.ALBUM],
            schema.TITLE: parsed[schema.TITLE],
            schema.TAGS: parsed[schema.TAGS],
            schema.DURATION_S: parsed[schema.DURATION_S],
        }

    records = tf.data.TFRecordDataset(files, compression_type=info.compression)
    dataset = records.map(example_parser(info), num_parallel_calls=AUTOTUNE, deterministic=True)
    dataset = dataset.map(to_chunks, num_parallel_calls=AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options).prefetch(AUTOTUNE)
