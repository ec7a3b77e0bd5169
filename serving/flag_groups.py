"""Flags several serving binaries share, defined once so that a flag name means one thing in every binary.

- `--export_base`: a serving base path, TF Serving's layout
  `EXPORT_BASE/<model name>/<version>/` (`serving.build_index` reads the
  models there; `serving.query` and `serving.app` look there when the exports
  moved since the index was built). `--export_dir`, in `serving.export` only,
  is one model's folder in it.
- `--server`, `--protocol`: embed through TF Serving instead of running the
  SavedModels in-process.
- `--tag_threshold`, `--tag_top_n`: a track's tag set (stage 1 filters by it when asked; it explains answers).
- `--query_expansion`: how many nearest catalog tracks join a query.

Each `define_*` function defines its flags on first call and returns the same
holders afterwards, so binaries (and tests importing several of them) share
one definition. A renamed flag stays defined only to refuse its old spelling
with a message naming the new one (`refuse_renamed`). Importing this module
loads no TensorFlow: binaries define and check their flags before they do.
"""

from __future__ import annotations

import dataclasses
import os

from absl import flags

from serving.retrieval.recommend_settings import DEFAULT_EXPANSION, QueryExpansion, TagFilter

_defined: dict[str, object] = {}


def _once(group: str, define):
    if group not in _defined:
        _defined[group] = define()
    return _defined[group]


def define_export_base(purpose: str) -> flags.FlagHolder:
    """`--export_base`: a serving base path holding `<model name>/<version>/` folders."""
    return _once("export_base", lambda: flags.DEFINE_string("export_base", None, f"Serving base path: {purpose}"))


@dataclasses.dataclass(frozen=True)
class ModelServerFlags:
    """`--server` and `--protocol`: where the index's models run."""

    server: flags.FlagHolder
    protocol: flags.FlagHolder

    def embedder(self, catalog, export_base: str | None = None):
        """The embedder of `catalog`'s models: TF Serving when `--server` is given, else in-process."""
        from serving.embedding import embedders

        return embedders.make_embedder(
            catalog.embedding_models, catalog.tag_model, self.server.value, self.protocol.value, export_base
        )


def define_model_server() -> ModelServerFlags:
    return _once(
        "model_server",
        lambda: ModelServerFlags(
            server=flags.DEFINE_string(
                "server", None, "TF Serving host:port; default: run the SavedModels in this process."
            ),
            protocol=flags.DEFINE_enum(
                "protocol", "grpc", ["grpc", "rest"], "How to talk to --server (gRPC port 8500, REST 8501)."
            ),
        ),
    )


@dataclasses.dataclass(frozen=True)
class TagFilterFlags:
    """`--tag_threshold` and `--tag_top_n`: a track's tag set (what stage 1 filters by, and what explains answers)."""

    threshold: flags.FlagHolder
    top_n: flags.FlagHolder

    def tag_filter(self) -> TagFilter:
        return TagFilter(self.threshold.value, self.top_n.value)


def define_tag_filter() -> TagFilterFlags:
    return _once(
        "tag_filter",
        lambda: TagFilterFlags(
            threshold=flags.DEFINE_float(
                "tag_threshold", TagFilter.threshold, "Tag sets: a tag counts from this probability on."
            ),
            top_n=flags.DEFINE_integer(
                "tag_top_n", TagFilter.top_n, "Tag sets: at most this many tags per track.", lower_bound=1
            ),
        ),
    )


@dataclasses.dataclass(frozen=True)
class RankingFlags:
    """`--query_expansion`: the nearest catalog tracks that join a query (0: the query alone)."""

    query_expansion: flags.FlagHolder

    def expansion(self) -> QueryExpansion | None:
        if not self.query_expansion.value:
            return None
        return QueryExpansion(self.query_expansion.value, DEFAULT_EXPANSION.power)


def define_ranking() -> RankingFlags:
    return _once(
        "ranking",
        lambda: RankingFlags(
            query_expansion=flags.DEFINE_integer(
                "query_expansion",
                DEFAULT_EXPANSION.neighbours,
                "Query expansion: the query's vector is averaged with its nearest catalog tracks', each weighted by "
                "its cosine cubed (0: rank by the query alone).",
                lower_bound=0,
            )
        ),
    )


def refuse_renamed(old: str, new: str, how: str = "") -> None:
    """Keeps `--OLD` defined only to refuse it with a message naming `--NEW` (and `how` to say it now)."""
    message = f"--{old} was renamed --{new} in this binary; use --{new}" + (f" ({how})" if how else "")

    def define():
        flags.DEFINE_string(old, None, f"Renamed: use --{new}.")
        flags.register_validator(old, lambda value: value is None, message=message)
        return old

    _once(f"renamed:{old}", define)


def unwritable_output(flag_name: str, path: str | None) -> str | None:
    """Why an output file flag (`--output_json`, `--tags_png`) cannot be written, checked before any work; or None."""
    if not path:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"--{flag_name}={path}: no folder {folder} to write it in"
    if os.path.isdir(path):
        return f"--{flag_name}={path} is a folder; give a file name"
    return None
