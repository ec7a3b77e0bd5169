"""Serving: SavedModel export for TF Serving, the catalog index (ScaNN), two-stage recommendations, the query
command and the web app.

Depends on `models`, `tfrecords` and `data_prep`, never on `train`.
"""

import data_prep  # noqa: F401 - first: its logging filter must be in place before Beam is imported.
