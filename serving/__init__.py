"""Serving: export for TF Serving, the catalog index (ScaNN), recommendations, queries and the web app.

Libraries live in sub-packages:

- `serving.export`: the SavedModel graph, its signatures, model identity;
- `serving.embedding`: query audio to model outputs, in-process or through TF Serving;
- `serving.retrieval`: the searcher, the catalog index and the Beam job that
  builds it, the recommender, rendering and evaluation;
- `serving.app`: the web service (routes, service, uploads) and its page.

Binaries are `python -m serving.<name>`: `export` (a package's `__main__`),
`build_index`, `query`, `evaluate_retrieval` and `app` (a package's
`__main__`); `flag_groups` defines the flags several of them share.

Depends on `intake`, `features`, `tfrecords`, `models` and `data_prep`'s Beam helpers, never on `train`.
"""

import data_prep  # noqa: F401 - first: its logging filter must be in place before Beam is imported.
