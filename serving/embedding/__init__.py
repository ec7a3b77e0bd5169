"""Query audio into model outputs, with exactly the model versions an index was built with.

- `query_audio`: a query file decoded and checked like the catalog's audio;
- `embedders`: `LocalEmbedder` (SavedModels in this process) and
  `RemoteEmbedder` (TF Serving), one interface;
- `tf_serving_client`: `TaggerClient`, gRPC or REST calls to TF Serving.
"""
