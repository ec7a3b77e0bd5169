"""The recommendation web service and its page (`python -m serving.app`).

- `service`: `create_app(AppConfig(...))`, the FastAPI app (API, page, metrics);
- `uploads`: multipart uploads streamed to private temporary files under a size limit;
- `catalog_audio`: catalog audio files resolved safely under the audio root;
- `metrics`: Prometheus metrics in the service's own registry;
- `errors`: the JSON error model; `schemas`: parameters and response bodies;
- `static/`: the page (HTML, CSS, JavaScript; no external resources).
"""
