"""Random views of a track's log-mel, for self-supervised (contrastive) training.

A view is a crop of the stored log-mel, optionally changed the way music
can change without becoming another piece: louder or quieter
(`logmel.apply_gain`, exact for the front end's compression), slightly
faster or slower (the crop is taken longer or shorter and resampled along
time), slightly transposed (the mel bands shifted by a few bins: an
approximate pitch shift), and partly masked (`readers.SpecAugment`).
Working on stored log-mels keeps the Beam preprocessing the only audio
decoder; every change is seeded statelessly, so a seed gives one view.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from features.logmel import LogMelSpec, apply_gain
from tfrecords import readers


@dataclasses.dataclass(frozen=True)
class ViewAugment:
    """How a view differs from the plain crop.

    Attributes:
        max_gain_db: Gain drawn uniformly from [-max, +max] dB.
        max_stretch: Tempo factor drawn uniformly from [1 - max, 1 + max]
            (0.1: up to 10 % faster or slower).
        max_shift_bins: Mel-band shift drawn uniformly from [-max, +max]
            (vacated bands take the silence value).
        spec_augment: Optional masking of the view (time and frequency masks).
    """

    max_gain_db: float = 6.0
    max_stretch: float = 0.1
    max_shift_bins: int = 2
    spec_augment: readers.SpecAugment | None = readers.SpecAugment(
        num_time_masks=1, max_time_mask_frames=24, num_freq_masks=1, max_freq_mask_bins=8
    )

    def __post_init__(self):
        if self.max_gain_db < 0 or self.max_shift_bins < 0 or not 0 <= self.max_stretch < 0.5:
            raise ValueError(f"invalid ViewAugment {self}: gains and shifts >= 0, stretch in [0, 0.5)")

    def view(self, log_mel: tf.Tensor, crop_frames: int, spec: LogMelSpec, seed: tf.Tensor) -> tf.Tensor:
        """One augmented float32 view `[crop_frames, n_mels]` of a track `[frames, n_mels]`."""
        stretch_seed, crop_seed, transform_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
        rate = tf.random.stateless_uniform([], stretch_seed, 1.0 - self.max_stretch, 1.0 + self.max_stretch)
        source_frames = tf.cast(tf.round(rate * crop_frames), tf.int32)
        crop = tf.cast(random_crop(log_mel, source_frames, crop_seed), tf.float32)
        if self.max_stretch:
            resized = tf.image.resize(crop[:, :, tf.newaxis], [crop_frames, tf.shape(crop)[1]], method="bilinear")
            crop = resized[:, :, 0]
        crop = tf.ensure_shape(crop, [crop_frames, log_mel.shape[-1]])
        return self.transform(crop, spec, transform_seed)

    def transform(self, crop: tf.Tensor, spec: LogMelSpec, seed: tf.Tensor) -> tf.Tensor:
        """Gain, band shift and masking of a float32 crop (everything but the tempo change)."""
        gain_seed, shift_seed, mask_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
        if self.max_gain_db:
            gain = tf.random.stateless_uniform([], gain_seed, -self.max_gain_db, self.max_gain_db)
            crop = apply_gain(crop, gain, spec)
        if self.max_shift_bins:
            shift = tf.random.stateless_uniform(
                [], shift_seed, -self.max_shift_bins, self.max_shift_bins + 1, dtype=tf.int32
            )
            crop = shift_bands(crop, shift, spec.silence_value)
        if self.spec_augment is not None:
            crop = self.spec_augment(crop, mask_seed)
        return crop


def random_crop(log_mel: tf.Tensor, crop_frames, seed: tf.Tensor) -> tf.Tensor:
    """One random crop `[crop_frames, n_mels]` (`crop_frames` may be a tensor); short tracks are repeated."""
    log_mel = readers.repeat_to_frames(log_mel, crop_frames)
    start = tf.random.stateless_uniform([], seed, 0, tf.shape(log_mel)[0] - crop_frames + 1, dtype=tf.int32)
    return log_mel[start : start + crop_frames]


def shift_bands(log_mel: tf.Tensor, shift: tf.Tensor, fill_value: float) -> tf.Tensor:
    """Moves the mel bands `shift` bins up (positive) or down; vacated bands get `fill_value`."""
    bins = tf.shape(log_mel)[1]
    source = tf.range(bins) - shift
    valid = (source >= 0) & (source < bins)
    shifted = tf.gather(log_mel, tf.clip_by_value(source, 0, bins - 1), axis=1)
    return tf.where(valid[tf.newaxis, :], shifted, tf.cast(fill_value, log_mel.dtype))
