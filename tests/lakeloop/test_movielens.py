"""MovieLens 100K loads from both published layouts into the same tables."""

from __future__ import annotations

import pyarrow.compute as pc

from lakeloop.movielens import MOVIES_SCHEMA, RATINGS_SCHEMA, load_movielens


def test_recbole_layout_holds_the_whole_data_set(movielens):
    assert movielens.ratings.schema == RATINGS_SCHEMA
    assert movielens.movies.schema == MOVIES_SCHEMA
    assert movielens.ratings.num_rows == 100_000
    assert pc.count_distinct(movielens.ratings["user_id"]).as_py() == 943
    assert movielens.movies.num_rows == 1682
    toy_story = movielens.movies.filter(pc.equal(movielens.movies["item_id"], "1")).to_pylist()[0]
    assert toy_story == {"item_id": "1", "title": "Toy Story", "year": 1995,
                         "genres": ["Animation", "Children's", "Comedy"]}


def test_grouplens_layout_is_read_the_same_way(tmp_path, movielens):
    sample = movielens.ratings.slice(0, 3).to_pylist()
    (tmp_path / "u.data").write_text(
        "".join(f"{r['user_id']}\t{r['item_id']}\t{int(r['rating'])}\t{r['timestamp']}\n" for r in sample))
    (tmp_path / "u.genre").write_text("unknown|0\nAction|1\nComedy|2\n\n", encoding="latin-1")
    (tmp_path / "u.item").write_text("1|Toy Story (1995)|01-Jan-1995||http://x|0|0|1\n"
                                     "2|Nameless|||http://y|1|0|0\n", encoding="latin-1")
    loaded = load_movielens(tmp_path)
    assert loaded.ratings.schema == RATINGS_SCHEMA
    assert loaded.ratings.to_pylist() == sample
    assert loaded.movies.to_pylist() == [
        {"item_id": "1", "title": "Toy Story", "year": 1995, "genres": ["Comedy"]},
        {"item_id": "2", "title": "Nameless", "year": None, "genres": ["unknown"]},
    ]


def test_missing_data_set_names_the_fix(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="make setup"):
        load_movielens(tmp_path)
