"""Serving: SavedModel export for TF Serving (and, later, the ScaNN retrieval stage).

Depends on `models` and `tfrecords` (the feature definition), never on `train`.
"""
