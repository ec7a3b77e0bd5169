"""The Keras taggers: sizes, shapes, training, saving, front end, precision."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from data_prep import pipeline
from features.logmel import LogMelSpec
from intake import audio, catalog
from tests.models.batch_norm_statistics import with_batch_statistics
from tfrecords import dataset_info, schema

# Trainable parameters of the reference implementations.
REFERENCE_PARAMETERS = {
    ("short_chunk_res", 50): 12_104_244,
    ("short_chunk_res", 32): 12_095_010,
    ("crnn", 50): 394_100,
    ("short_chunk_cnn", 50): 3_687_348,
    ("musicnn", 50): 787_159,  # The musicnn package's checkpoints (tests/models/test_musicnn.py counts them).
    ("musicnn_vgg", 50): 605_748,
}


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("name, num_tags", sorted(REFERENCE_PARAMETERS))
def test_parameter_counts_match_the_reference(name, num_tags):
    assert _trainable(models.get_model(name, num_tags)) == REFERENCE_PARAMETERS[(name, num_tags)]


@pytest.mark.parametrize(
    "name, n_mels, frames",
    [
        ("short_chunk_res", 128, 231),
        ("short_chunk_res", 96, 231),
        ("short_chunk_res", 128, None),
        ("short_chunk_cnn", 128, 231),
        ("crnn", 96, 1813),
        ("crnn", 96, None),
    ],
)
def test_output_shapes(name, n_mels, frames):
    model = models.get_model(name, 10, n_mels=n_mels, num_frames=frames)
    length = frames or 500
    outputs = model(np.zeros((3, length, n_mels), np.float32), training=False)
    embedding = 32 if name == "crnn" else 512
    assert outputs[models.TAGS].shape == (3, 10) and outputs[models.EMBEDDING].shape == (3, embedding)
    probabilities = outputs[models.TAGS].numpy()
    assert ((probabilities >= 0) & (probabilities <= 1)).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        models.get_model("samplecnn", 10)
    with pytest.raises(ValueError, match="96 mel bands"):
        models.get_model("crnn", 10, n_mels=128)
    with pytest.raises(ValueError, match="vocabulary has 2 tags"):
        models.get_model("crnn", 3, vocabulary=["a", "b"])
    with pytest.raises(ValueError, match="unknown model"):
        models.required_n_mels("samplecnn")


def test_which_architectures_need_their_own_mel_bands():
    """The trainer refuses a dataset by this answer: the CRNN and musicnn need theirs, the short-chunk models
    take any (tested built at 96 and 128 bands above)."""
    assert {name: models.required_n_mels(name) for name in models.MODEL_BUILDERS} == {
        "crnn": 96,
        "musicnn": 96,
        "musicnn_vgg": 96,
        "short_chunk_cnn": None,
        "short_chunk_res": None,
    }


# The short-chunk models' layers with 16 channels where 128 are not what a check is about: the same graph
# at a sixty-fourth of the convolutions' work.
_NARROW = {"short_chunk_res": {"n_channels": 16}, "short_chunk_cnn": {"n_channels": 16}}


@pytest.mark.parametrize("name", ["short_chunk_res", "crnn", "short_chunk_cnn", "musicnn", "musicnn_vgg"])
def test_one_optimisation_step_lowers_the_loss(name):
    keras.utils.set_random_seed(0)
    frames = {"crnn": 256, "musicnn": 187, "musicnn_vgg": 187}.get(name, 128)
    no_dropout = {} if name.startswith("musicnn") else {"dropout": 0.0}
    model = models.get_model(name, 5, num_frames=frames, **no_dropout, **_NARROW.get(name, {}))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss={models.TAGS: keras.losses.BinaryCrossentropy()})
    rng = np.random.default_rng(0)
    x = rng.normal(-30.0, 20.0, size=(8, frames, models.DEFAULT_N_MELS[name])).astype(np.float32)
    y = {models.TAGS: (rng.random((8, 5)) > 0.5).astype(np.float32)}
    before = model.train_on_batch(x, y, return_dict=True)["loss"]
    after = model.train_on_batch(x, y, return_dict=True)["loss"]
    assert after < before


@pytest.mark.parametrize("name", ["short_chunk_res", "crnn", "musicnn", "musicnn_vgg"])
def test_keras_save_load_round_trip(name, tmp_path):
    model = models.get_model(name, 4, vocabulary=["a", "b", "c", "d"])
    x = np.random.default_rng(1).normal(-30, 20, size=(2, *model.input_shape[1:])).astype(np.float32)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    for key in (models.TAGS, models.EMBEDDING):
        np.testing.assert_array_equal(loaded(x, training=False)[key].numpy(), model(x, training=False)[key].numpy())
    assert models.tag_vocabulary(loaded) == ["a", "b", "c", "d"]


@pytest.mark.parametrize("name", ["crnn", "short_chunk_res", "short_chunk_cnn"])
def test_inference_form_folds_every_block_batch_norm_and_keeps_the_outputs(name, tmp_path):
    rng = np.random.default_rng(3)
    frames = 256 if name == "crnn" else 128
    model = models.get_model(name, 5, num_frames=frames, **_NARROW.get(name, {}))
    model = with_batch_statistics(model, rng)
    folded = models.for_inference(model, name)
    blocks = [layer for layer in folded.layers if isinstance(layer, models.layers.ConvBlock | models.layers.ResBlock)]
    assert blocks and all(block.folded for block in blocks)
    assert not any(
        isinstance(inner, keras.layers.BatchNormalization)
        for block in blocks
        for inner in block._flatten_layers(include_self=False)
    )
    x = rng.normal(-30.0, 20.0, size=(2, frames, models.DEFAULT_N_MELS[name])).astype(np.float32)
    expected, got = model(x, training=False), folded(x, training=False)
    for key in (models.TAGS, models.EMBEDDING):
        np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), rtol=1e-4, atol=1e-4)
    folded.save(tmp_path / "folded.keras")
    loaded = keras.saving.load_model(tmp_path / "folded.keras")
    np.testing.assert_array_equal(loaded(x)[models.EMBEDDING].numpy(), got[models.EMBEDDING].numpy())
    assert not model.get_layer("layer1").folded  # The trained model is left as it was.


@pytest.mark.parametrize("name", ["musicnn", "crnn"])
def test_bfloat16_inference_form_computes_in_bfloat16_and_answers_in_float32(name):
    rng = np.random.default_rng(5)
    options = {"musicnn": {"frontend_filters": 0.4, "num_frames": 187}, "crnn": {"num_frames": 256}}[name]
    model = with_batch_statistics(models.get_model(name, 4, **options), rng)
    float32, bfloat16 = models.for_inference(model, name), models.for_inference(model, name, "bfloat16")
    compute = {layer.name: layer.compute_dtype for layer in bfloat16.layers}
    assert compute[models.TAGS] == compute[models.EMBEDDING] == "float32"
    heavy = [layer for layer in bfloat16.layers if layer.weights and layer.name not in (models.TAGS,)]
    assert heavy and all(layer.compute_dtype == "bfloat16" for layer in heavy if layer.name.startswith(("layer", "t")))
    assert all(weight.dtype == "float32" for weight in bfloat16.weights)
    x = np.abs(rng.normal(1.0, 1.0, size=(3, *model.input_shape[1:]))).astype(np.float32)
    expected, got = float32(x, training=False), bfloat16(x, training=False)
    assert got[models.TAGS].dtype == got[models.EMBEDDING].dtype == "float32"
    embedding, reference = got[models.EMBEDDING].numpy(), expected[models.EMBEDDING].numpy()
    cosine = (
        np.sum(embedding * reference, axis=1) / np.linalg.norm(embedding, axis=1) / np.linalg.norm(reference, axis=1)
    )
    assert cosine.min() > 0.99 and not np.array_equal(embedding, reference)  # Close, and really bfloat16.
    np.testing.assert_allclose(got[models.TAGS].numpy(), expected[models.TAGS].numpy(), atol=0.05)
    with pytest.raises(ValueError, match="unknown precision 'float16'"):
        models.for_inference(model, name, "float16")


def test_inference_form_of_an_architecture_without_one_is_the_model_itself():
    model = models.get_model("musicnn_vgg", 3)
    assert models.for_inference(model, "musicnn_vgg") is model
    with pytest.raises(ValueError, match="unknown model"):
        models.for_inference(model, "samplecnn")


@pytest.fixture(scope="module")
def pipeline_dataset(tmp_path_factory, demo_catalog):
    """Two demo tracks through the real pipeline, log-mels stored as float32."""
    output = tmp_path_factory.mktemp("front_end")
    parsed = catalog.read_catalog(str(demo_catalog))
    parsed = catalog.Catalog(parsed.source, parsed.sha256, 2, parsed.entries[:2], ())
    config = pipeline.PreprocessConfig(
        output_dir=str(output), split_by="track", log_mel_dtype="float32", split_fractions=(1, 0, 0)
    )
    pipeline.run(parsed, config, ["--direct_running_mode=in_memory"])
    return output, parsed


def test_waveform_front_end_equals_tagger_on_stored_log_mel(pipeline_dataset):
    output, parsed = pipeline_dataset
    info = dataset_info.load(str(output))
    tagger = models.get_model("short_chunk_res", 4, num_frames=None)
    waveform_model = models.with_waveform_front_end(tagger)
    records = tf.data.TFRecordDataset(dataset_info.shard_paths(str(output), info, "train"))
    checked = 0
    for record in records:
        example = schema.decode_example(record.numpy(), info.log_mel_dtype)
        entry = next(e for e in parsed.entries if e.track_id == example[schema.TRACK_ID])
        waveform, _ = audio.load_mono(entry.uri, entry.uri, 16000)
        front_end = waveform_model.get_layer("log_mel_front_end")(waveform[np.newaxis])
        np.testing.assert_allclose(front_end.numpy()[0], example[schema.LOG_MEL], atol=1e-3)
        from_waveform = waveform_model(waveform[np.newaxis], training=False)
        from_stored = tagger(example[schema.LOG_MEL][np.newaxis], training=False)
        for key in (models.TAGS, models.EMBEDDING):
            np.testing.assert_allclose(from_waveform[key].numpy(), from_stored[key].numpy(), rtol=1e-4, atol=1e-5)
        checked += 1
    assert checked == 2


def test_waveform_model_for_fixed_length_and_mismatched_mels():
    tagger = models.get_model("short_chunk_res", 3)
    waveform_model = models.with_waveform_front_end(tagger)
    assert waveform_model.input_shape == (None, 58_880)  # The shortest waveform of 231 frames.
    assert waveform_model(np.zeros((1, 58_880), np.float32))[models.TAGS].shape == (1, 3)
    with pytest.raises(ValueError, match="96 mel bands"):
        models.with_waveform_front_end(tagger, LogMelSpec(n_mels=96))
    musicnn = models.with_waveform_front_end(models.get_model("musicnn", 3))
    assert musicnn.get_layer("log_mel_front_end").spec == models.DEFAULT_LOG_MEL["musicnn"]


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_outputs_are_float32(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        for name in ("short_chunk_res", "crnn", "musicnn"):
            tagger = models.get_model(name, 3, num_frames=None)
            model = models.with_waveform_front_end(tagger)  # Each architecture's own front end.
            first_conv = "timbral_74" if name == "musicnn" else "layer1"
            assert tagger.get_layer(first_conv).compute_dtype == policy.removeprefix("mixed_")
            outputs = model(np.random.default_rng(0).normal(0, 0.1, (2, 48000)).astype(np.float32), training=False)
            for key in (models.TAGS, models.EMBEDDING):
                assert outputs[key].dtype == tf.float32
                assert np.isfinite(outputs[key].numpy()).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


# The CRNN's recurrent layer under XLA; musicnn's convolutions are compiled by the trainer's XLA test
# (`tests/train/test_training.py::test_mixed_precision_and_xla_training`).
@pytest.mark.parametrize("name", ["crnn"])
def test_jit_compiled_training_step(name):
    frames = 256 if name == "crnn" else 128
    model = models.get_model(name, 3, num_frames=frames, **_NARROW.get(name, {}))
    model.compile(optimizer="adam", loss={models.TAGS: "binary_crossentropy"}, jit_compile=True)
    x = np.zeros((4, frames, models.DEFAULT_N_MELS[name]), np.float32)
    logs = model.train_on_batch(x, {models.TAGS: np.ones((4, 3), np.float32)}, return_dict=True)
    assert np.isfinite(logs["loss"])


def test_a_model_without_tags_saves_loads_and_outputs_an_empty_tag_vector(tmp_path):
    """A contrastive run from scratch has no tags: the tag head outputs `[batch, 0]`, serializable."""
    model = models.get_model("short_chunk_cnn", 0, vocabulary=[])
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    outputs = loaded(np.zeros((2, 231, 128), np.float32))
    assert outputs[models.TAGS].shape == (2, 0) and outputs[models.EMBEDDING].shape == (2, 512)
    assert not loaded.get_layer(models.TAGS).weights
