"""Catalog parsing, row validation and the tag vocabulary."""

from __future__ import annotations

import pytest

from intake import catalog
from tests.binaries import run_binary


def _parse(text: str, audio_root: str = "/music") -> catalog.Catalog:
    return catalog.parse_catalog(text.encode("utf-8"), "cat.csv", audio_root)


def test_demo_catalog(demo_catalog):
    parsed = catalog.read_catalog(str(demo_catalog))
    assert parsed.num_rows == 16 and len(parsed.entries) == 16 and not parsed.rejections
    entry = parsed.entries[0]
    assert entry.uri.endswith(entry.path) and entry.uri.startswith(str(demo_catalog.parent))
    assert entry.tags == ("hyperrogue",) and entry.duration_s == 15.0 and entry.artist


def test_missing_required_column_names_it_and_the_file():
    with pytest.raises(catalog.CatalogError, match=r"cat.csv: missing required column\(s\) \['path'\]"):
        _parse("track_id,title\n1,x\n")


def test_empty_and_non_utf8_files():
    with pytest.raises(catalog.CatalogError, match="empty"):
        _parse("")
    with pytest.raises(catalog.CatalogError, match="UTF-8"):
        catalog.parse_catalog(b"track_id,path\n\xff\xfe,x\n", "latin.csv", "/")


def _unclosed_quote_csv(directory) -> str:
    """A catalog whose third row opens a quote that never closes: the field runs past csv's 128 KB limit."""
    path = directory / "unclosed.csv"
    path.write_text('track_id,path,title\na,a.mp3,fine\nb,b.mp3,"never closed\n' + "x," * 70_000 + "\n")
    return str(path)


def test_an_unclosed_quote_is_named_with_its_line(tmp_path):
    with pytest.raises(catalog.CatalogError, match=r"unclosed.csv: not valid CSV at line \d+ .*quote left open"):
        catalog.read_catalog(_unclosed_quote_csv(tmp_path))


@pytest.mark.parametrize(
    ("binary", "flags"),
    [
        ("data_prep", ["--output_dir={tmp}/out"]),
        ("serving.build_index", ["--index_dir={tmp}/index", "--export_base={tmp}"]),
        ("serving.evaluate_retrieval", ["--index_dir={tmp}"]),
    ],
)
def test_the_binaries_reading_a_catalog_name_an_unclosed_quote(binary, flags, tmp_path):
    (tmp_path / "catalog_index.json").write_text("{}")  # evaluate_retrieval checks the index folder first.
    catalog_flag = "--catalog" if binary != "serving.build_index" else "--data"
    done = run_binary(
        binary, f"{catalog_flag}={_unclosed_quote_csv(tmp_path)}", *(f.format(tmp=tmp_path) for f in flags)
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'unclosed.csv'}: not valid CSV at line")


def test_bad_rows_become_rejections_with_reasons():
    parsed = _parse(
        "track_id,path,tags,split,duration_s\n"
        "a,a.mp3,rock|pop| rock ,,30\n"
        ",b.mp3,rock,,\n"
        "c,,rock,,\n"
        "a,d.mp3,rock,,\n"
        "e,e.mp3,rock,holdout,\n"
        "f,f.mp3,rock,,long\n"
        "g,g.mp3,rock,,-1\n"
        "h,gs://bucket/h.mp3,,test,\n"
        "i,/abs/i.mp3,jazz,,,extra\n"
    )
    assert parsed.num_rows == 9
    assert [e.track_id for e in parsed.entries] == ["a", "h"]
    a, h = parsed.entries
    assert a.tags == ("rock", "pop") and a.uri == "/music/a.mp3" and a.duration_s == 30.0
    assert h.uri == "gs://bucket/h.mp3" and h.split == "test" and h.tags == ()
    reasons = {(r.row, r.reason): r.detail for r in parsed.rejections}  # Rows are the file's lines.
    assert reasons[(3, "invalid_row")] == "empty track_id"
    assert reasons[(4, "invalid_row")] == "empty path"
    assert "first appears on line 2" in reasons[(5, "duplicate_track_id")]
    assert "'holdout'" in reasons[(6, "invalid_row")]
    assert "'long' is not a number" in reasons[(7, "invalid_row")]
    assert "not positive" in reasons[(8, "invalid_row")]
    assert "more field" in reasons[(10, "invalid_row")]
    assert len(parsed.entries) + len(parsed.rejections) == parsed.num_rows


def test_rejections_name_the_file_line_with_blank_lines_and_quoted_line_breaks():
    parsed = _parse('track_id,path,tags\n\na,a.mp3,rock\n\n\n,b.mp3,"rock\nwith a line break"\nc,,rock\n\n')
    assert parsed.num_rows == 3 and [e.track_id for e in parsed.entries] == ["a"]
    assert parsed.entries[0].row == 3
    assert [(r.row, r.detail) for r in parsed.rejections] == [(6, "empty track_id"), (8, "empty path")]


def test_vocabulary_order_min_count_max_tags_and_given():
    parsed = _parse("track_id,path,tags\n1,1,a|b\n2,2,b|c\n3,3,b\n4,4,c\n5,5,d\n")
    vocabulary = catalog.build_vocabulary(parsed.entries)
    assert vocabulary.tags == ("b", "c", "a", "d")
    vocabulary = catalog.build_vocabulary(parsed.entries, min_count=2)
    assert vocabulary.tags == ("b", "c") and vocabulary.out_of_vocabulary == {"a": 1, "d": 1}
    assert catalog.build_vocabulary(parsed.entries, max_tags=1).tags == ("b",)
    assert catalog.build_vocabulary(parsed.entries, given=["d", "a"]).tags == ("d", "a")
    kept, rejected = catalog.reject_untagged(
        list(parsed.entries), catalog.build_vocabulary(parsed.entries, min_count=2)
    )
    assert [e.track_id for e in kept] == ["1", "2", "3", "4"]
    assert [(r.track_id, r.reason) for r in rejected] == [("5", "no_usable_tag")]
    assert "['d']" in rejected[0].detail
