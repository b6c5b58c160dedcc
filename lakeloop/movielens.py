"""Load MovieLens 100K from either of its two published layouts (RecBole's atomic files or the GroupLens zip).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

RATINGS_SCHEMA = pa.schema([
    ("user_id", pa.string()),
    ("item_id", pa.string()),
    ("rating", pa.float64()),
    ("timestamp", pa.int64()),
])
MOVIES_SCHEMA = pa.schema([
    ("item_id", pa.string()),
    ("title", pa.string()),
    ("year", pa.int32()),
    ("genres", pa.list_(pa.string())),
])


@dataclass(frozen=True)
class MovieLens:
    """Ratings (user, item, rating, epoch-seconds timestamp) and the movie catalog, as Arrow tables."""

    ratings: pa.Table
    movies: pa.Table


def load_movielens(dataset_dir: Path) -> MovieLens:
    """Read MovieLens 100K from `dataset_dir`, whichever layout it holds."""
    dataset_dir = Path(dataset_dir)
    if (dataset_dir / "ml-100k.inter").exists():
        return MovieLens(_recbole_ratings(dataset_dir), _recbole_movies(dataset_dir))
    if (dataset_dir / "u.data").exists():
        return MovieLens(_grouplens_ratings(dataset_dir), _grouplens_movies(dataset_dir))
    raise FileNotFoundError(
        f"no MovieLens 100K in {dataset_dir}: expected ml-100k.inter (RecBole) or u.data (GroupLens); "
        "run `make setup` to fetch it"
    )


def _read_tsv(path: Path, names: list[str], types: dict[str, pa.DataType], skip_header: bool,
              delimiter: str = "\t", encoding: str = "utf8") -> pa.Table:
    return pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(column_names=names, skip_rows=1 if skip_header else 0,
                                       encoding=encoding),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=False),
        convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False),
    )


def _recbole_ratings(dataset_dir: Path) -> pa.Table:
    table = _read_tsv(dataset_dir / "ml-100k.inter", ["user_id", "item_id", "rating", "timestamp"],
                      {"user_id": pa.string(), "item_id": pa.string(), "rating": pa.float64(),
                       "timestamp": pa.float64()}, skip_header=True)
    return table.set_column(3, "timestamp", pc.cast(table["timestamp"], pa.int64()))


def _recbole_movies(dataset_dir: Path) -> pa.Table:
    table = _read_tsv(dataset_dir / "ml-100k.item", ["item_id", "title", "year", "genres"],
                      {"item_id": pa.string(), "title": pa.string(), "year": pa.string(),
                       "genres": pa.string()}, skip_header=True)
    year = pc.cast(pc.if_else(pc.match_substring_regex(table["year"], r"^\d{4}$"), table["year"], None),
                   pa.int32())
    genres = pc.split_pattern(table["genres"], " ")
    return pa.table([table["item_id"], table["title"], year, _drop_empty(genres)], schema=MOVIES_SCHEMA)


def _drop_empty(lists: pa.ChunkedArray) -> pa.ChunkedArray:
    """Remove empty-string entries from each list (a movie with no genre gets an empty list)."""
    return pa.chunked_array([pa.array([[g for g in row if g] for row in chunk.to_pylist()],
                                      pa.list_(pa.string())) for chunk in lists.chunks])


def _grouplens_ratings(dataset_dir: Path) -> pa.Table:
    return _read_tsv(dataset_dir / "u.data", ["user_id", "item_id", "rating", "timestamp"],
                     {"user_id": pa.string(), "item_id": pa.string(), "rating": pa.float64(),
                      "timestamp": pa.int64()}, skip_header=False)


def _grouplens_movies(dataset_dir: Path) -> pa.Table:
    genre_names = [row[0] for row in csv.reader((dataset_dir / "u.genre").open(encoding="latin-1"),
                                                 delimiter="|") if row]
    items, titles, years, genres = [], [], [], []
    with (dataset_dir / "u.item").open(encoding="latin-1") as handle:
        for row in csv.reader(handle, delimiter="|"):
            if not row:
                continue
            title, _, year = row[1].rpartition(" (")
            items.append(row[0])
            titles.append(title or row[1])
            years.append(int(year[:4]) if year[:4].isdigit() else None)
            genres.append([name for name, flag in zip(genre_names, row[5:], strict=False) if flag == "1"])
    return pa.table([pa.array(items), pa.array(titles), pa.array(years, pa.int32()),
                     pa.array(genres, pa.list_(pa.string()))], schema=MOVIES_SCHEMA)
