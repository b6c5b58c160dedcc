"""`lakeloop catalog import`: a user's Parquet or CSV catalog checked and written as the lake's reference table,
read back by the Spark jobs' `read_catalog`; every bad file refused with the column and rows named, the lake's
catalog left as it was."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakeloop.catalog import CatalogError, import_catalog
from lakeloop.cli import main
from lakeloop.lake import Lake
from lakeloop.movielens import MOVIES_SCHEMA
from lakeloop.names import MOVIES
from lakeloop.replay import MOVIES_FILE

GOOD_CSV = """item_id,title,year,genres,studio
10,"Heat, the director's cut",1995,Action|Crime| Thriller,Warner
11,Untitled,,,
12,Old Film,1921,Drama|Drama,
"""
EXPECTED = pa.table({"item_id": ["10", "11", "12"], "title": ["Heat, the director's cut", "Untitled", "Old Film"],
                     "year": pa.array([1995, None, 1921], pa.int32()),
                     "genres": [["Action", "Crime", "Thriller"], [], ["Drama"]]}, schema=MOVIES_SCHEMA)


def lake_catalog(lake: Lake) -> pa.Table:
    """The reference table as the lake holds it."""
    with lake.filesystem.open_input_file(lake.path(MOVIES, MOVIES_FILE)) as handle:
        return pq.read_table(handle)


def write_csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalog.csv"
    path.write_text(text)
    return path


def write_parquet(tmp_path: Path, columns: dict) -> Path:
    path = tmp_path / "catalog.parquet"
    pq.write_table(pa.table(columns), path)
    return path


def test_a_csv_catalog_becomes_the_lake_s_reference_table(tmp_path: Path, lake: Path):
    imported = import_catalog(write_csv(tmp_path, GOOD_CSV), lake)

    assert lake_catalog(Lake.from_url(str(lake))).equals(EXPECTED)
    assert (imported.items, imported.items_with_year, imported.genres) == (3, 2, 4)
    assert imported.ignored_columns == ("studio",)
    assert imported.url == f"file://{lake}/{MOVIES}"


def test_a_parquet_catalog_with_integer_ids_and_years_is_conformed(tmp_path: Path, lake: Path):
    source = write_parquet(tmp_path, {"item_id": pa.array([10, 11, 12], pa.int64()),
                                      "title": ["Heat, the director's cut", "Untitled", "Old Film"],
                                      "year": pa.array([1995, None, 1921], pa.int64()),
                                      "genres": [["Action", "Crime", "Thriller"], None, ["Drama"]]})
    import_catalog(source, lake)

    assert lake_catalog(Lake.from_url(str(lake))).equals(EXPECTED)


def test_the_imported_catalog_is_what_the_spark_jobs_read(spark, tmp_path: Path, lake: Path):
    from lakeloop.spark_jobs import read_catalog

    import_catalog(write_csv(tmp_path, GOOD_CSV), lake)

    rows = sorted(read_catalog(spark, Lake.from_url(str(lake))).collect())
    assert [row.asDict() for row in rows] == EXPECTED.to_pylist()


def test_a_catalog_is_imported_into_an_s3_lake(tmp_path: Path, s3_lake: Lake):
    imported = import_catalog(write_csv(tmp_path, GOOD_CSV), s3_lake)

    assert lake_catalog(s3_lake).equals(EXPECTED)
    assert imported.url == s3_lake.uri(s3_lake.path(MOVIES))


BAD_CSVS = {
    "missing column": ("item_id,title,genres\n1,A,Drama\n", ["missing column(s) year", "found item_id, title, genres"]),
    "no rows": ("item_id,title,year,genres\n", ["has no rows"]),
    "empty id": ("item_id,title,year,genres\n1,A,1990,\n,B,1991,\n", ["item_id is empty in row 2 (None)"]),
    "duplicate id": ("item_id,title,year,genres\n7,A,1990,\n8,B,1990,\n7,C,1991,\n",
                     ["item_id '7' occur more than once (rows 1 ('7'), 3 ('7'))", "one row per item"]),
    "year not a number": ("item_id,title,year,genres\n1,A,1990,\n2,B,about 1950,\n3,C,19x5,\n",
                          ["year is not a whole number in rows 2 ('about 1950'), 3 ('19x5')"]),
    "year implausible": ("item_id,title,year,genres\n1,A,95,\n2,B,1995,\n3,C,799145600,\n",
                         ["year is outside 1800..2100 in rows 1 (95), 3 (799145600)", "four-digit release year"]),
}


@pytest.mark.parametrize("case", BAD_CSVS)
def test_a_bad_csv_is_refused_naming_the_column_and_rows(tmp_path: Path, lake: Path, case: str):
    text, expected = BAD_CSVS[case]
    with pytest.raises(CatalogError) as refused:
        import_catalog(write_csv(tmp_path, text), lake)

    for words in expected:
        assert words in str(refused.value)
    assert not (lake / MOVIES).exists()


def test_the_first_bad_rows_are_named_and_the_rest_counted(tmp_path: Path, lake: Path):
    text = "item_id,title,year,genres\n" + "".join(f"{i},T,{1000 + i},\n" for i in range(8))
    with pytest.raises(CatalogError, match=r"rows 1 \(1000\), 2 \(1001\), 3 \(1002\), 4 \(1003\), 5 \(1004\) "
                                           r"and 3 more"):
        import_catalog(write_csv(tmp_path, text), lake)


BAD_PARQUETS = {
    "float id": ({"item_id": [1.5, 2.0], "title": ["A", "B"], "year": [1990, 1991], "genres": [["x"], ["y"]]},
                 "item_id is double: it must be text or an integer"),
    "title not text": ({"item_id": ["1"], "title": [3], "year": [1990], "genres": [["x"]]},
                       "title is int64: it must be text"),
    "fractional year": ({"item_id": ["1", "2"], "title": ["A", "B"], "year": [1990.0, 1990.5], "genres": [[], []]},
                        "year is not a whole number in row 2 (1990.5)"),
    "year a date": ({"item_id": ["1"], "title": ["A"], "year": pa.array([0], pa.date32()), "genres": [[]]},
                    "year is date32[day]: it must be a whole number"),
    "genres numbers": ({"item_id": ["1"], "title": ["A"], "year": [1990], "genres": [[1, 2]]},
                       "genres is list<element: int64>: it must be a list of strings"),
}


@pytest.mark.parametrize("case", BAD_PARQUETS)
def test_a_bad_parquet_is_refused_naming_the_column(tmp_path: Path, lake: Path, case: str):
    columns, expected = BAD_PARQUETS[case]
    with pytest.raises(CatalogError, match=re.escape(expected)):
        import_catalog(write_parquet(tmp_path, columns), lake)


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path, lake: Path):
    source = write_parquet(tmp_path, {"item_id": [1.5], "title": [3], "year": ["x"], "genres": [[1]]})
    with pytest.raises(CatalogError) as refused:
        import_catalog(source, lake)

    assert [str(refused.value).count(column) >= 1 for column in ("item_id is", "title is", "year is", "genres is")] \
        == [True] * 4


def test_a_refused_file_leaves_the_lake_s_catalog_as_it_was(tmp_path: Path, lake: Path):
    import_catalog(write_csv(tmp_path, GOOD_CSV), lake)
    with pytest.raises(CatalogError):
        import_catalog(write_csv(tmp_path, "item_id,title,year,genres\n1,A,1990,\n1,B,1991,\n"), lake)

    assert lake_catalog(Lake.from_url(str(lake))).equals(EXPECTED)


@pytest.mark.parametrize("name, content, expected", [
    ("catalog.json", "{}", "a catalog is a .parquet or .csv file"),
    ("catalog.parquet", "not parquet", "not a readable parquet file"),
])
def test_a_file_that_is_not_parquet_or_csv_is_refused(tmp_path: Path, lake: Path, name: str, content: str,
                                                       expected: str):
    (tmp_path / name).write_text(content)
    with pytest.raises(CatalogError, match=expected):
        import_catalog(tmp_path / name, lake)


def test_the_command_imports_into_the_configured_lake_and_prints_a_summary(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("LAKELOOP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LAKELOOP_LAKE_URL", (tmp_path / "lake").as_uri())
    source = write_csv(tmp_path, GOOD_CSV)

    assert main(["catalog", "import", str(source)]) == 0

    out = capsys.readouterr().out
    assert f"imported 3 items (2 with a year, 4 genres) from {source} into file://{tmp_path}/lake/{MOVIES}" in out
    assert "ignored columns: studio" in out
    assert lake_catalog(Lake.from_url((tmp_path / "lake").as_uri())).equals(EXPECTED)


def test_the_command_refuses_a_bad_file_with_exit_1_and_the_reason(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("LAKELOOP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LAKELOOP_LAKE_URL", (tmp_path / "lake").as_uri())

    assert main(["catalog", "import", str(tmp_path / "nowhere.csv")]) == 1

    err = capsys.readouterr().err
    assert f"lakeloop catalog import: {tmp_path / 'nowhere.csv'}: no such file" in err
    assert not (tmp_path / "lake" / MOVIES).exists()
