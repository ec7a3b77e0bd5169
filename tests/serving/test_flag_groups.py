"""Shared serving flags: one definition each, the same holders for every binary, renamed spellings refused."""

from __future__ import annotations

import pytest
from absl import flags

from serving import flag_groups
from serving.retrieval.recommender import TagFilter


@pytest.fixture
def parse():
    """Parses argv into the global flags (`absl_flags_restored` restores them after the test).

    Not `flagsaver`: it deletes the flags a test defined, and `flag_groups` defines each group once per process.
    """
    return lambda *argv: flags.FLAGS(["binary", *argv], known_only=True)


def test_each_group_is_defined_once_and_shared():
    assert flag_groups.define_tag_filter() is flag_groups.define_tag_filter()
    assert flag_groups.define_model_server() is flag_groups.define_model_server()
    assert flag_groups.define_export_base("a") is flag_groups.define_export_base("b")


def test_tag_filter_flags_make_the_recommenders_filter(parse):
    group = flag_groups.define_tag_filter()
    parse("--tag_threshold=0.3", "--tag_top_n=2")
    assert group.tag_filter() == TagFilter(0.3, 2)
    with pytest.raises(flags.IllegalFlagValueError):
        parse("--tag_top_n=0")


def test_a_renamed_flag_is_refused_naming_the_new_one(parse):
    flag_groups.define_export_base("models")
    flag_groups.refuse_renamed("export_dir_for_test", "export_base")
    assert parse("--export_base=/models")
    assert flags.FLAGS.export_base == "/models"
    with pytest.raises(flags.IllegalFlagValueError, match="--export_dir_for_test was renamed --export_base"):
        parse("--export_dir_for_test=/models")
