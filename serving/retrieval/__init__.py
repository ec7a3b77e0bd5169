"""The retrieval stage: the catalog index, how it is built, and two-stage recommendations from it.

- `searcher`: `TrackIndex`, a thin wrapper of a ScaNN searcher (build,
  search, upsert, delete, save and load by track id);
- `catalog_index`: `CatalogIndex`, the index folder: track metadata,
  embeddings, tag probabilities, the searcher, the models' identities and
  the format version;
- `embedding_job`: the Beam job that embeds a catalog (CSV or TFRecords)
  with the exported models and builds or updates a `CatalogIndex`;
- `recommender`: stage 1 (shared confident tags) and stage 2 (embedding
  similarity) over a `CatalogIndex`;
- `rendering`: a result as a table, JSON or a tag chart;
- `evaluation`, `mfcc_baseline`: retrieval quality against ground-truth tags,
  and the MFCC-statistics baseline it is compared with.
"""
