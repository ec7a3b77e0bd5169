r"""Serves recommendations over HTTP: a JSON API, a page to try it in a browser, Prometheus metrics.

Usage (after `make demo`):

    python -m serving.app --index_dir=demo_output/index --audio_root=demo
    # open http://127.0.0.1:8080/ ; the API's OpenAPI schema is at /openapi.json:
    curl -F audio=@demo/audio/starfighter--death.mp3 'http://127.0.0.1:8080/recommend?k=5'
    curl 'http://127.0.0.1:8080/tracks/hyperrogue--hr3-caves/similar?k=5&max_per_artist=1'
    curl -r 0-1023 -o head.mp3 http://127.0.0.1:8080/tracks/hyperrogue--hr3-caves/audio
    python -m serving.app --index_dir=demo_output/index --server=localhost:8500   # embed through TF Serving

embeds uploads with the exact model versions the index was built with, in
this process from the SavedModels by default (`--export_base` if they moved)
or through TF Serving with `--server` (gRPC; `--protocol=rest` for port
8501). `--audio_root` is the folder the catalog's track paths are relative
to (the catalog CSV's folder; `demo` for the demo): without it the service
plays no catalog audio and results carry no `audio_url`. It binds to
127.0.0.1 unless `--host` says otherwise; `--port=0` takes a free port. The
first line printed is `serving http://HOST:PORT/` once the index and models
are loaded and warm. One process serves everything (the models are loaded
once); `--inference_threads` uploads are embedded at once.
"""

from __future__ import annotations

from tf_startup import load_tensorflow, run

import sys

from absl import flags

from serving import flag_groups
from serving.retrieval import index_layout

_INDEX_DIR = flags.DEFINE_string("index_dir", None, "The index built by serving.build_index.", required=True)
_EXPORT_BASE = flag_groups.define_export_base("where the exported models are, if they moved since the index was built.")
flag_groups.refuse_renamed("export_dir", "export_base")
_MODEL_SERVER = flag_groups.define_model_server()
_AUDIO_ROOT = flags.DEFINE_string(
    "audio_root", None, "The folder the catalog's track paths are relative to; default: serve no catalog audio."
)
_HOST = flags.DEFINE_string("host", "127.0.0.1", "The address to listen on (0.0.0.0: every interface).")
_PORT = flags.DEFINE_integer(
    "port", 8080, "The port to listen on (0: any free port).", lower_bound=0, upper_bound=65535
)
_MAX_UPLOAD_MB = flags.DEFINE_float("max_upload_mb", 50.0, "Largest upload accepted, in MiB.", lower_bound=0.001)
_MAX_DURATION_S = flags.DEFINE_float("max_duration_s", 600.0, "Longest audio accepted, in seconds.", lower_bound=1.0)
_INFERENCE_THREADS = flags.DEFINE_integer(
    "inference_threads", 2, "Uploads decoded and embedded at once.", lower_bound=1
)
_MAX_PENDING = flags.DEFINE_integer(
    "max_pending_uploads", 32, "Uploads received or processed at once; more are answered 503.", lower_bound=1
)
_UPLOAD_DIR = flags.DEFINE_string(
    "upload_dir", None, "Where to create the private folder for uploads; default: the system's temporary folder."
)
_UPLOAD_IDLE_TIMEOUT_S = flags.DEFINE_float(
    "upload_idle_timeout_s", 10.0, "An upload that sends nothing for this long is answered 408.", lower_bound=0.01
)
_UPLOAD_DEADLINE_S = flags.DEFINE_float(
    "upload_deadline_s", 120.0, "An upload not received within this long is answered 408.", lower_bound=0.01
)
_TAG_FILTER = flag_groups.define_tag_filter()  # The tag sets' defaults; requests may override them.
_RANKING = flag_groups.define_ranking()  # Query expansion by default; requests may override it.
_ACCESS_LOG = flags.DEFINE_bool("access_log", True, "Log every request.")
_HEADER_TIMEOUT_S = flags.DEFINE_float(
    "header_timeout_s",
    10.0,
    "A connection that sends no complete request head within this long (of connecting, or of its last "
    "response) is closed.",
    lower_bound=0.01,
)
_MAX_CONNECTIONS = flags.DEFINE_integer(
    "max_connections",
    512,
    "Open connections at most; one more is closed at once (keep it under the process's file limit, ulimit -n).",
    lower_bound=1,
)


def _url(sock) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def main(argv):
    del argv
    try:  # Checked before TensorFlow and ScaNN load.
        index_layout.require_index(_INDEX_DIR.value)
    except FileNotFoundError as error:
        sys.exit(f"error: {error}")
    load_tensorflow()
    import uvicorn  # After absl parsed the flags: uvicorn configures logging on import of its config.

    from serving.app.connections import bounded_protocol, limit_repeated_logs
    from serving.app.routes import create_app, listen
    from serving.app.service import AppConfig
    from serving.app.uploads import UploadDeadlines
    from serving.embedding.tf_serving_client import ServingError
    from serving.export.exported_model import ModelMismatchError
    from serving.retrieval.catalog_index import IndexMismatchError

    try:
        config = AppConfig(
            index_dir=_INDEX_DIR.value,
            export_base=_EXPORT_BASE.value,
            server=_MODEL_SERVER.server.value,
            protocol=_MODEL_SERVER.protocol.value,
            audio_root=_AUDIO_ROOT.value,
            max_upload_bytes=int(_MAX_UPLOAD_MB.value * 2**20),
            max_duration_s=_MAX_DURATION_S.value,
            inference_threads=_INFERENCE_THREADS.value,
            max_pending_uploads=_MAX_PENDING.value,
            upload_parent_dir=_UPLOAD_DIR.value,
            upload_deadlines=UploadDeadlines(_UPLOAD_IDLE_TIMEOUT_S.value, _UPLOAD_DEADLINE_S.value),
            tag_filter=_TAG_FILTER.tag_filter(),
            expansion=_RANKING.expansion(),
        )
        web_app = create_app(config)
        sock = listen(_HOST.value, _PORT.value)
    except (FileNotFoundError, IndexMismatchError, ModelMismatchError, ServingError, ValueError, OSError) as error:
        sys.exit(f"error: {error}")
    print(f"serving {_url(sock)} (index {config.index_dir}, {len(web_app.state.service.catalog)} tracks)", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(
            web_app,
            http=bounded_protocol(_HEADER_TIMEOUT_S.value, _MAX_CONNECTIONS.value),
            access_log=_ACCESS_LOG.value,
            timeout_graceful_shutdown=5,
            log_level="info",
        )
    )
    limit_repeated_logs()  # After uvicorn configured its loggers.
    server.run(sockets=[sock])


if __name__ == "__main__":
    run(main)
