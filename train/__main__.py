r"""Trains a tagger.

Usage (the bundled demo, after `python -m data_prep --catalog=demo/catalog.csv
--output_dir=demo_output/tfrecords_128 --split_by=track --split_fractions=0.5,0.25,0.25`):

    python -m train --config=short_chunk_res.gin --config=demo.gin \
        --dataset_dir=demo_output/tfrecords_128 --model_dir=/tmp/demo_short_chunk_res
    tensorboard --logdir=/tmp/demo_short_chunk_res

The Won et al. (2020) MagnaTagATune recipe, on all local GPUs:

    python -m train --config=mtat_short_chunk_res.gin --model_dir=/tmp/mtat_res \
        --dataset_dir=/data/mtat_128 --strategy=mirrored --mixed_precision=mixed_bfloat16

Fine-tuning the reference's MagnaTagATune CRNN (`pretrained/mtat_crnn`) on a
96-band dataset with its own tags (the output layer is replaced):

    python -m train --config=finetune_mtat_crnn.gin --dataset_dir=demo_output/tfrecords_96 \
        --model_dir=/tmp/finetuned_crnn

Without tags: contrastive fine-tuning of musicnn on the demo's own audio
(`python -m data_prep --catalog=demo/catalog.csv --output_dir=/tmp/demo_musicnn
--split_by=track --norequire_tags --log_mel_preset=musicnn` first; a student
distilled from a teacher: see `python -m train.compute_teacher_targets`):

    python -m train --config=contrastive_msd_musicnn.gin --dataset_dir=/tmp/demo_musicnn \
        --model_dir=/tmp/contrastive_musicnn --gin_param="Experiment.batch_size = 8"

Several `--config` compose in order; `--gin_param` bindings override them. A
bare name is looked up in the packaged `configs/`. Killing the process and
running the same command again resumes from the last checkpoint.
"""

from __future__ import annotations

from tf_startup import load_tensorflow, run

import sys

from absl import flags, logging

from train import strategies

_CONFIG = flags.DEFINE_multi_string("config", [], "Gin config files or packaged config names, composed in order.")
_GIN_FILE = flags.DEFINE_multi_string("gin_file", [], "Alias of --config.")
_GIN_PARAM = flags.DEFINE_multi_string("gin_param", [], "Gin bindings, e.g. Experiment.epochs=3.")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Where checkpoints and TensorBoard logs go.", required=True)
_DATASET_DIR = flags.DEFINE_string("dataset_dir", None, "Overrides Experiment.dataset_dir.")
_STRATEGY = flags.DEFINE_enum("strategy", "default", strategies.STRATEGIES, "tf.distribute strategy.")
_TPU = flags.DEFINE_string("tpu", None, "TPU address for --strategy=tpu.")
_MIXED_PRECISION = flags.DEFINE_enum(
    "mixed_precision", None, ["mixed_float16", "mixed_bfloat16"], "Keras mixed-precision policy."
)
_JIT_COMPILE = flags.DEFINE_boolean("jit_compile", False, "Compile the training step with XLA.")
_PROFILE_STEPS = flags.DEFINE_list("profile_steps", [], "Two global steps FIRST,LAST to profile between.")

# What a run cannot start without, and how to give it.
REQUIRED_SETTINGS = {
    "Experiment.model_name": "give a model's config first, e.g. --config=crnn.gin (packaged configs: configs/)",
    "Experiment.dataset_dir": "give --dataset_dir=DIR (a dataset written by python -m data_prep)",
}


@flags.validator("profile_steps", message="--profile_steps takes two global steps FIRST,LAST with 0 <= FIRST <= LAST")
def _two_ordered_steps(value: list[str]) -> bool:
    if not value:
        return True
    if len(value) != 2 or not all(step.strip().isdigit() for step in value):
        return False
    first, last = (int(step) for step in value)
    return first <= last


@flags.multi_flags_validator(
    ["strategy", "tpu"], message="--strategy=tpu needs --tpu (the TPU's address, or --tpu=local on a TPU VM)"
)
def _tpu_has_an_address(values: dict) -> bool:
    return values["strategy"] != "tpu" or bool(values["tpu"])


def main(argv):
    del argv
    load_tensorflow()
    from train import config as config_lib
    from train.initialization import InitializationError
    from train.objectives import ObjectiveError

    try:
        _train()
    except (
        config_lib.ConfigError,
        config_lib.ConfigMismatchError,
        InitializationError,
        ObjectiveError,
        FileNotFoundError,
    ) as error:
        sys.exit(f"error: {error}")  # The user's input: the message alone, no traceback.


def _train():
    from train import config as config_lib
    from train.experiment import Experiment
    from train.trainer import Trainer

    bindings = list(_GIN_PARAM.value)
    if _DATASET_DIR.value:
        bindings.append(f"Experiment.dataset_dir = {_DATASET_DIR.value!r}")
    config_text = config_lib.parse(_CONFIG.value + _GIN_FILE.value, bindings)
    config_lib.require(REQUIRED_SETTINGS)
    strategy = strategies.make_strategy(_STRATEGY.value, _TPU.value)
    is_chief = strategies.is_chief(strategy)
    config_lib.check_or_save(_MODEL_DIR.value, config_text, is_chief)
    experiment = Experiment()
    profile = tuple(int(step) for step in _PROFILE_STEPS.value) if _PROFILE_STEPS.value else None
    trainer = Trainer(
        experiment,
        _MODEL_DIR.value,
        strategy,
        is_chief=is_chief,
        mixed_precision=_MIXED_PRECISION.value,
        jit_compile=_JIT_COMPILE.value,
        profile_steps=profile,
    )
    if is_chief:
        trainer.writers.config(config_text, config_lib.save_operative(_MODEL_DIR.value))
    result = trainer.train()
    logging.info("Done: %s", result)
    print(
        f"trained {experiment.model_name} for {result.epochs_completed} epochs ({result.global_step} steps); "
        f"best {experiment.best_metric} {result.best_value:.4f} at epoch {result.best_epoch}. "
        f"TensorBoard: tensorboard --logdir={_MODEL_DIR.value}"
    )


if __name__ == "__main__":
    run(main)
