"""The pretrained models' exports made on first use (`serving.export.pretrained_exports`)."""

from __future__ import annotations

import pytest

from serving.export import exported_model, pretrained_exports
from tests.conftest import REPO_ROOT

PRETRAINED = str(REPO_ROOT / "pretrained")


def test_a_missing_export_is_made_once_and_an_unknown_model_is_named(tmp_path):
    export_base = str(tmp_path / "export")
    assert pretrained_exports.export_missing(["mtat_crnn"], PRETRAINED, export_base) == ["mtat_crnn"]
    ref = exported_model.resolve_named(export_base, "mtat_crnn")
    assert ref.version == 1 and ref.model_name == "crnn" and len(ref.vocabulary) == 50
    assert pretrained_exports.export_missing(["mtat_crnn", "mtat_crnn/1"], PRETRAINED, export_base) == []
    with pytest.raises(FileNotFoundError, match=r"model 'no_such_model': not exported under .* `make install`"):
        pretrained_exports.export_missing(["no_such_model"], PRETRAINED, export_base)
