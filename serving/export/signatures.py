"""The exported taggers' serving contract: signature, input and output names, defined once.

Every SavedModel written by `serving.export` has these signatures; the
exporter, the in-process loader, the TF Serving client, the warm-up requests
and the tests all name them through this module.

| signature         | input                                       | outputs          |
|-------------------|---------------------------------------------|------------------|
| `serving_default` | `waveform` float32 `[batch, samples]`       | `tags`, `embedding` |
| `tags`            | `waveform`                                  | `tags`           |
| `embed`           | `waveform`                                  | `embedding`      |
| `log_mel`         | `log_mel` float32 `[batch, frames, n_mels]` | `tags`, `embedding` |
"""

from __future__ import annotations

# The most evenly spaced chunks an export averages a track over (fewer for short tracks: `readers.chunk_count`).
DEFAULT_NUM_CHUNKS = 16

# Signature names.
SERVING_DEFAULT = "serving_default"
TAGS_SIGNATURE = "tags"
EMBED_SIGNATURE = "embed"
LOG_MEL_SIGNATURE = "log_mel"

# Input names.
WAVEFORM_INPUT = "waveform"
LOG_MEL_INPUT = "log_mel"

# Output names.
TAGS_OUTPUT = "tags"
EMBEDDING_OUTPUT = "embedding"

# Each signature's outputs, in this order.
OUTPUTS = {
    SERVING_DEFAULT: (TAGS_OUTPUT, EMBEDDING_OUTPUT),
    TAGS_SIGNATURE: (TAGS_OUTPUT,),
    EMBED_SIGNATURE: (EMBEDDING_OUTPUT,),
    LOG_MEL_SIGNATURE: (TAGS_OUTPUT, EMBEDDING_OUTPUT),
}
# Each signature's input.
INPUTS = {
    SERVING_DEFAULT: WAVEFORM_INPUT,
    TAGS_SIGNATURE: WAVEFORM_INPUT,
    EMBED_SIGNATURE: WAVEFORM_INPUT,
    LOG_MEL_SIGNATURE: LOG_MEL_INPUT,
}
# The signatures TF Serving clients call with waveforms.
WAVEFORM_SIGNATURES = (SERVING_DEFAULT, TAGS_SIGNATURE, EMBED_SIGNATURE)
