# Set-up and entry points. `make demo` and `make test` work on a fresh clone:
# they create .venv and install the project into it first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PRETRAINED := pretrained
PRETRAINED_STAMP := $(PRETRAINED)/.installed
DEMO_OUT ?= demo_output
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: install demo test coverage lint bench clean system-packages

$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The pretrained models: the musicnn wheel's checkpoints, fetched from PyPI
# without dependencies, hash-checked and converted (pretrained/mtat_crnn is in
# the repository). Nothing is downloaded at run time.
$(PRETRAINED_STAMP): $(STAMP) models/pretrained.py models/convert_musicnn_lib.py models/musicnn.py
	$(BIN)/python -m models.install_pretrained --output_dir=$(PRETRAINED)
	touch $(PRETRAINED_STAMP)

install: $(STAMP) $(PRETRAINED_STAMP)

# The main job on the bundled demo catalog. Recommendations come from the
# pretrained models (an ensemble of musicnn's Million Song Dataset and
# MagnaTagATune embeddings ranks, centred on the catalog; the reference's
# MagnaTagATune CRNN tags explain each answer, and filter on request: the
# research system's stage 1), exported for TF Serving and indexed with ScaNN; the demo then prints the top 5
# for a few demo tracks and for an audio file and scores same-soundtrack
# retrieval. To show training, it also preprocesses the audio into log-mel
# TFRecords (128 mel bands for the Short-Chunk ResNet, 96 for the CRNN), trains
# both taggers briefly on the CPU, evaluates and exports them, and scores an
# index of the demo-trained models next to the pretrained one. It ends by
# printing how to start the web app on the demo index. Running it again
# resumes (and finds the runs finished).
DEMO_SPLIT := --split_by=track --split_fractions=0.5,0.25,0.25
DEMO_QUERIES := hyperrogue--hr3-caves dave-gnukem--escape-looping pekka-kana-2--intro
demo: $(STAMP) $(PRETRAINED_STAMP)
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
	$(BIN)/python -m serving.export --model_dir=$(PRETRAINED)/mtat_crnn --export_dir=$(DEMO_OUT)/export/mtat_crnn
	$(BIN)/python -m serving.export --model_dir=$(PRETRAINED)/msd_musicnn --export_dir=$(DEMO_OUT)/export/msd_musicnn
	$(BIN)/python -m serving.export --model_dir=$(PRETRAINED)/mtt_musicnn --export_dir=$(DEMO_OUT)/export/mtt_musicnn
	$(BIN)/python -m serving.build_index --export_base=$(DEMO_OUT)/export --embedding_models=short_chunk_res \
		--tag_model=crnn --data=demo/catalog.csv --index_dir=$(DEMO_OUT)/index_demo_trained
	$(BIN)/python -m serving.build_index --export_base=$(DEMO_OUT)/export --embedding_models=msd_musicnn,mtt_musicnn \
		--tag_model=mtat_crnn --data=demo/catalog.csv --index_dir=$(DEMO_OUT)/index
	for track in $(DEMO_QUERIES); do \
		$(BIN)/python -m serving.query --index_dir=$(DEMO_OUT)/index --track_id=$$track --k=5 || exit 1; echo; done
	$(BIN)/python -m serving.query --index_dir=$(DEMO_OUT)/index --audio=demo/audio/starfighter--death.mp3 --k=5 \
		--tags_png=$(DEMO_OUT)/query_tags.png
	$(BIN)/python -m serving.evaluate_retrieval --index_dir=$(DEMO_OUT)/index,$(DEMO_OUT)/index_demo_trained \
		--catalog=demo/catalog.csv --k=3 --mfcc_baseline
	@echo "TensorBoard logs: $(BIN)/tensorboard --logdir=$(DEMO_OUT)"
	@echo "Web app: $(BIN)/python -m serving.app --index_dir=$(DEMO_OUT)/index --audio_root=demo  (then open http://127.0.0.1:8080/)"

# The one system package the tests need that pip cannot provide: Debian's
# chromium, which the web app's browser test drives through Playwright
# (Playwright's own browser downloads are not used). Installed with apt-get
# (as root, or through sudo without a password) only when missing.
system-packages:
	@if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then \
		echo "Installing Debian's chromium (system-wide) for the browser test..."; \
		if [ "$$(id -u)" -eq 0 ]; then as_root=""; else as_root="sudo -n"; fi; \
		$$as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null && \
		$$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
			</dev/null >/dev/null; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint $(PRETRAINED_STAMP) system-packages
	$(BIN)/python -m pytest -n 2 --durations=15

# Line coverage of the package over the whole suite, the binaries the tests start
# as processes included. The report ends with the total; coverage.txt keeps it.
coverage: lint $(PRETRAINED_STAMP) system-packages
	rm -f .coverage .coverage.*
	COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/coverage run -m pytest -n 2 --durations=15
	COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/coverage combine --quiet
	COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/coverage report | tee coverage.txt

# The app_load benchmark serves the demo index: the demo runs first if it is missing.
$(DEMO_OUT)/index/catalog_index.json:
	$(MAKE) demo

bench: $(STAMP) $(DEMO_OUT)/index/catalog_index.json
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .coverage .coverage.* coverage.txt
