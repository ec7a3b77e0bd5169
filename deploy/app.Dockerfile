# The web app (python -m serving.app) as a container: a non-root user, a health
# check on /healthz, the index (and, for in-process embedding, the exports)
# mounted read-only; TF Serving beside it with --server (deploy/docker-compose.yml).
#
#   docker build -f deploy/app.Dockerfile -t music-recommender-app .
#   docker run --rm -p 127.0.0.1:8080:8080 -v "$PWD/my_index:/index:ro" \
#     -v "$HOME/Music:/music:ro" music-recommender-app --audio_root=/music --server=HOST:8500
#
# Arguments after the image name are appended to CMD's: any flag of
# `python -m serving.app --help`. tests/serving/test_deploy.py starts the app with
# this file's ENTRYPOINT and CMD and checks the rest of it.
FROM python:3.11.7-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /opt/music-recommender
COPY setup.py pyproject.toml README.md tf_startup.py ./
COPY intake/ intake/
COPY features/ features/
COPY data_prep/ data_prep/
COPY tfrecords/ tfrecords/
COPY models/ models/
COPY train/ train/
COPY serving/ serving/
COPY configs/ configs/
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin app

# Uploads go to the system's temporary folder; nothing else is written.
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["python", "-m", "serving.app"]
CMD ["--index_dir=/index", "--host=0.0.0.0", "--port=8080"]
