"""Benchmarks, each against a baseline measured in the same run, written as ratios to `BENCHMARKS.md`.

- `preprocess_throughput`: `python -m data_prep` vs a `librosa.load` + `np.save` loop;
- `reader_throughput`: the tf.data readers vs reading the shards in a plain loop;
- `model_inference`: the taggers' forward passes;
- `index_search`: the ScaNN searcher vs exact search (and HNSW, with the `bench` extra);
- `recommend_latency`: a query end to end, by stage;
- `app_load`: the web app under concurrent clients vs one client;
- `retrieval_quality`: same-album precision of each model's embeddings vs MFCC statistics.

Run them with `python -m benchmarks` (or `--only=NAME`); each rewrites its own
section of `BENCHMARKS.md` (see `benchmarks.report`), with the load average.
"""
