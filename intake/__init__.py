"""How every stage takes in a track: the catalog, its audio, the audio checks and the rejection format.

- `catalog`: a catalog CSV (or URI) parsed into entries, with rejected rows;
- `audio`: decoding (libsndfile, FFmpeg through PyAV), downmix, resampling, bounds on decoded size;
- `audio_checks`: the one set of checks (length, silence, sample rate) a track must pass;
- `rejections`: the one rejection format (row, track id, path, reason, detail) and its reasons.

Shared by `data_prep` (preprocessing), `serving` (the index, queries, uploads)
and `train` (evaluation reports); imports nothing of this project but
`tfrecords.splits`' split names.
"""
