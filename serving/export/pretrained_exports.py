"""The pretrained models' exports, made on first use: what `serving.build_index` ranks and tags with by default.

`python -m serving.build_index --data=~/Music --index_dir=my_index` names no
`--export_base`: the index is then built with the pretrained models in
`pretrained/` (where `make install` put them), exported as
`python -m serving.export` exports them by default (the inference graph, at
`--precision=auto`) into `pretrained/export/<name>/<version>/`, once. An
export already there is used as it is.
"""

from __future__ import annotations

import os

from serving.export import exported_model, graph_options, saved_model

PRETRAINED_DIR = "pretrained"
EXPORT_BASE = os.path.join(PRETRAINED_DIR, "export")


def export_missing(specs: list[str], pretrained_dir: str = PRETRAINED_DIR, export_base: str = EXPORT_BASE) -> list[str]:
    """Exports each model named in `specs` (`NAME` or `NAME/VERSION`) that `export_base` lacks from
    `pretrained_dir/NAME`; returns the names exported.

    Raises:
        FileNotFoundError: A model that is neither exported nor a pretrained artifact, naming both places.
    """
    exported = []
    for spec in specs:
        name = spec.strip().partition("/")[0]
        try:
            exported_model.resolve_named(export_base, spec)
            continue
        except FileNotFoundError:
            pass
        artifact_dir = os.path.join(pretrained_dir, name)
        if not os.path.isdir(artifact_dir):
            raise FileNotFoundError(
                f"model {spec!r}: not exported under {export_base} and no pretrained model {artifact_dir} "
                "(run `make install`, or give --export_base)"
            )
        saved_model.export(artifact_dir, os.path.join(export_base, name), precision=graph_options.AUTO)
        exported.append(name)
    return exported
