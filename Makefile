# Set-up and entry points. `make demo` and `make test` work on a fresh clone:
# they create .venv and install the project into it first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_output
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: install demo test lint bench clean

$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The main job on the bundled demo catalog: audio -> log-mel TFRecords (128
# mel bands for the Short-Chunk ResNet, 96 for the CRNN), a short training run
# of both taggers on the CPU, their track-level evaluation, their export
# as TF Serving SavedModels, the ScaNN index of the catalog, and the top 5
# recommendations for a few demo tracks and for an audio file; it ends by
# printing how to start the web app on the demo index. Running it again
# resumes (and finds the runs finished).
DEMO_SPLIT := --split_by=track --split_fractions=0.5,0.25,0.25
DEMO_QUERIES := hyperrogue--hr3-caves dave-gnukem--escape-looping pekka-kana-2--intro
demo: $(STAMP)
	$(BIN)/python -m data_prep --catalog=demo/catalog.csv --output_dir=$(DEMO_OUT)/tfrecords_128 $(DEMO_SPLIT)
	$(BIN)/python -m data_prep --catalog=demo/catalog.csv --output_dir=$(DEMO_OUT)/tfrecords_96 $(DEMO_SPLIT) --n_mels=96
	$(BIN)/python -m train --config=short_chunk_res.gin --config=demo.gin \
		--dataset_dir=$(DEMO_OUT)/tfrecords_128 --model_dir=$(DEMO_OUT)/short_chunk_res
	$(BIN)/python -m train --config=crnn.gin --config=demo.gin --gin_param='Experiment.crop_frames = 938' \
		--dataset_dir=$(DEMO_OUT)/tfrecords_96 --model_dir=$(DEMO_OUT)/crnn
	$(BIN)/python -m train.evaluate --model_dir=$(DEMO_OUT)/short_chunk_res --split=test
	$(BIN)/python -m train.evaluate --model_dir=$(DEMO_OUT)/crnn --split=test
	rm -rf $(DEMO_OUT)/export
	$(BIN)/python -m serving.export --model_dir=$(DEMO_OUT)/short_chunk_res --export_dir=$(DEMO_OUT)/export/short_chunk_res
	$(BIN)/python -m serving.export --model_dir=$(DEMO_OUT)/crnn --export_dir=$(DEMO_OUT)/export/crnn
	$(BIN)/python -m serving.build_index --export_dir=$(DEMO_OUT)/export --data=demo/catalog.csv --index_dir=$(DEMO_OUT)/index
	for track in $(DEMO_QUERIES); do \
		$(BIN)/python -m serving.query --index_dir=$(DEMO_OUT)/index --track_id=$$track --k=5 || exit 1; echo; done
	$(BIN)/python -m serving.query --index_dir=$(DEMO_OUT)/index --audio=demo/audio/starfighter--death.mp3 --k=5 \
		--tags_png=$(DEMO_OUT)/query_tags.png
	$(BIN)/python -m serving.evaluate_retrieval --index_dir=$(DEMO_OUT)/index --catalog=demo/catalog.csv --k=3
	@echo "TensorBoard logs: $(BIN)/tensorboard --logdir=$(DEMO_OUT)"
	@echo "Web app: $(BIN)/python -m serving.app --index_dir=$(DEMO_OUT)/index --audio_root=demo  (then open http://127.0.0.1:8080/)"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -n 2 --durations=15

# The app_load benchmark serves the demo index: the demo runs first if it is missing.
$(DEMO_OUT)/index/catalog_index.json:
	$(MAKE) demo

bench: $(STAMP) $(DEMO_OUT)/index/catalog_index.json
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
