"""Content-based music recommender: log-mel TFRecords, Keras taggers, ScaNN retrieval."""

import setuptools

INSTALL_REQUIRES = [
    # scann 1.4.2 ships TensorFlow custom ops built against TF 2.20 exactly;
    # `import scann` fails on TF 2.21, so TF stays on 2.20.x.
    "tensorflow~=2.20.0",
    # Keras 3 API (keras.ops, serializable layers); 3.10 is the first release
    # tested with TF 2.20, and Keras 4 may break the saving format.
    "keras>=3.10,<4",
    # The retrieval index; the [tf] extra pulls its TensorFlow ops.
    "scann[tf]==1.4.2",
    # Preprocessing pipeline; 2.60 is the first release supporting Python 3.12
    # and the DirectRunner's multi-processing mode as used here.
    "apache-beam>=2.60",
    # Decoding: libsndfile >= 1.1 (bundled in soundfile >= 0.13 wheels) reads
    # MP3 and Opus, which older wheels cannot.
    "soundfile>=0.13",
    # FFmpeg's decoders (bundled in the wheels) as the fallback for files that
    # libsndfile rejects (AAC/M4A, WMA, odd MP3s); tensorflow-io is not usable
    # with TF >= 2.18.
    "av>=12",
    # High-quality resampling to 16 kHz.
    "soxr>=0.3",
    # A folder as a catalog (intake.folder_catalog): the files' own tags (ID3,
    # Vorbis comments, MP4 atoms, RIFF/AIFF ID3) in every format decoded here;
    # pure Python, no system library.
    "mutagen>=1.47",
    # librosa: used by the baseline of the preprocessing benchmark and by the
    # evaluation's pitch-shift/time-stretch robustness study.
    "librosa>=0.10",
    "numpy>=1.26",
    # Per-tag AUC and robustness plots of the evaluation.
    "matplotlib>=3.7",
    "pandas>=2.0",
    # Spotify catalog builder (data_prep.spotify).
    "spotipy>=2.23",
    # Experiment configuration (configs/*.gin) and runtime flags.
    "gin-config>=0.5",
    "absl-py>=1.4",
    # TF Serving protos and gRPC stubs for the serving client; must match TF.
    "tensorflow-serving-api~=2.20.0",
    # The serving client's transports (gRPC and REST).
    "grpcio>=1.60",
    "requests>=2.31",
    "tensorboard~=2.20.0",
    # The web service (serving.app): FastAPI for the HTTP API and its OpenAPI
    # schema (query-parameter models need >= 0.115), uvicorn to serve it,
    # python-multipart's streaming parser for uploads (the
    # `python_multipart` module name from 0.0.13), prometheus-client for /metrics.
    "fastapi>=0.115",
    "uvicorn>=0.30",
    "python-multipart>=0.0.13",
    "prometheus-client>=0.20",
]

PACKAGES = ["intake", "features", "data_prep", "tfrecords", "models", "train", "serving", "configs"]

EXTRAS_REQUIRE = {
    # benchmarks.index_search compares ScaNN with faiss's HNSW.
    "bench": ["faiss-cpu>=1.8"],
    # Dataflow runner and GCS filesystem; heavy, so opt-in.
    "dataflow": ["apache-beam[gcp]>=2.60"],
    # Beam's Dask runner (`--runner=dask`) and dask.distributed: the Beam jobs
    # on a Dask cluster, or on a LocalCluster of worker processes. Install it
    # on the launcher and on every worker.
    "dask": ["apache-beam[dask]>=2.60"],
    # Converting the reference's PyTorch checkpoints (models.convert_torch).
    "torch": ["torch>=2.2"],
    "dev": [
        "pytest>=8",
        "pytest-xdist>=3.5",
        # `make test` runs the suite in a random order (seed in the header; replay with -p randomly
        # --randomly-seed=N): a test that depends on another's leftovers fails instead of passing by luck.
        "pytest-randomly>=3.15",
        # `make coverage`: line coverage of the package, subprocesses included (`patch = subprocess`).
        "coverage>=7.10",
        "filelock>=3.12",  # tests/conftest.py: fixtures built once and shared by the xdist workers.
        "apache-beam[dask]>=2.60",  # Both Beam jobs are tested on a Dask cluster of worker processes.
        "ruff>=0.6",
        "pyyaml>=6",  # The deployment-file tests parse docker-compose.yml and kubernetes.yaml.
        # The converter's tests run the PyTorch reference architectures. The
        # pin is the CPU build the project's CI machines carry (2.13.0+cpu);
        # an unpinned resolve may pick a CUDA build with gigabytes of deps.
        "torch==2.13.0",
        # serving.app's tests: HTTP client (also the load generator of
        # benchmarks.app_load), schema-driven fuzzing, and the page in headless
        # Chromium (Debian's `chromium`, which `make test` installs; Playwright's
        # own browser downloads are not used).
        "httpx>=0.27",
        "schemathesis>=4.0,<5",
        "hypothesis>=6.100",
        "playwright>=1.45",
    ],
}

setuptools.setup(
    name="music-recommender",
    version="0.1.0",
    description=__doc__,
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=[f"{name}*" for name in PACKAGES]),
    py_modules=["tf_startup"],
    package_data={"configs": ["*.gin", "*/*.gin"], "serving.app": ["static/*"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
