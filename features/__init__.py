"""The log-mel feature: its one definition (`logmel_spec.LogMelSpec`, presets, fingerprint) and its computation.

`logmel_spec` needs only numpy, so binaries check their flags with it before
TensorFlow loads; `logmel` computes the spectrogram in TensorFlow, the same
function in preprocessing, in every model's serving graph and in the tests'
references. Every stage imports the feature from here: `models` imports
nothing else of this project.
"""
