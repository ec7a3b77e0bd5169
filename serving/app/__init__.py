"""The recommendation web service and its page (the binary: `python -m serving.app`, in `__main__`).

- `routes`: `create_app(AppConfig(...))`, the FastAPI app: the JSON API's routes, the page, metrics, headers;
- `service`: `RecommendationService`, what the routes call: decode, embed, recommend, respond;
- `uploads`: multipart uploads streamed to private temporary files under a size limit;
- `catalog_audio`: catalog audio files resolved safely under the audio root;
- `metrics`: Prometheus metrics in the service's own registry;
- `errors`: the JSON error model; `schemas`: parameters and response bodies;
- `static/`: the page (HTML, CSS, JavaScript; no external resources).
"""
