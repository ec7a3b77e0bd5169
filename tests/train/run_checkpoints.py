"""Test support: what a training run's latest checkpoint holds (counters, optimizer steps, training-only heads)."""

from __future__ import annotations

import os

import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from train.trainer import CHECKPOINT_DIRNAME


def checkpoint_state(model_dir) -> dict:
    """The latest checkpoint's counters, its optimizer's step count and the heads it holds."""
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINT_DIRNAME)))
    values = {
        name: int(reader.get_tensor(f"state/{name}/.ATTRIBUTES/VARIABLE_VALUE"))
        for name in ("global_step", "epoch", "step_in_epoch")
    }
    iterations = [k for k in reader.get_variable_to_shape_map() if k.startswith("optimizer/") and "iteration" in k]
    values["optimizer_iterations"] = int(reader.get_tensor(iterations[0]))
    values["heads"] = _checkpointed_heads(reader)
    return values


def _checkpointed_heads(reader) -> list[str]:
    """The training-only heads in a checkpoint's object graph (their variables may be stored under the
    optimizer's path, which reaches them first)."""
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    heads = [child.node_id for child in graph.nodes[0].children if child.local_name == "heads"]
    return sorted(child.local_name for node in heads for child in graph.nodes[node].children)
