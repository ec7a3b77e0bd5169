"""Exported taggers: the SavedModel graph TF Serving loads, its signatures, and model identity.

- `saved_model`: the serving graph around a trained tagger (waveform or
  log-mel in; chunk-averaged tags and embedding out) and `export`, which
  writes it as an immutable TF Serving version folder;
- `signatures`: the signature, input and output names, defined once;
- `exported_model`: `ModelRef` (one version of one exported model, pinned by
  checksum), `resolve` (version folders) and `LoadedModel` (in-process calls);
- `__main__`: the binary, `python -m serving.export`.
"""
