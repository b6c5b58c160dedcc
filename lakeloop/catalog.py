"""`lakeloop catalog import`: a user's own item catalog (Parquet or CSV with item_id, title, year, genres),
checked and written as the lake's reference table in place of MovieLens' movies.

See README.md (Your own data).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lakeloop.lake import Lake, as_lake
from lakeloop.movielens import MOVIES_SCHEMA
from lakeloop.names import MOVIES
from lakeloop.replay import MOVIES_FILE
from tfspark.storage import RemoteDirectory

REQUIRED_COLUMNS = tuple(MOVIES_SCHEMA.names)
CSV_GENRE_SEPARATOR = "|"
# A year outside this range is a typo or another unit (a timestamp, a two-digit year), not a release year.
MIN_YEAR, MAX_YEAR = 1800, 2100
ROWS_SHOWN = 5  # bad rows quoted in an error; the count says how many more


class CatalogError(ValueError):
    """A catalog file lakeloop cannot import: the message names the column, the first bad rows and the fix."""


@dataclass(frozen=True)
class CatalogImport:
    """What an import wrote: the reference table's URL, its items, how many have a year, its distinct genres."""

    url: str
    items: int
    items_with_year: int
    genres: int
    ignored_columns: tuple[str, ...]

    def summary(self, source: Path) -> str:
        """One line for the terminal."""
        ignored = f"; ignored columns: {', '.join(self.ignored_columns)}" if self.ignored_columns else ""
        return (f"imported {self.items} items ({self.items_with_year} with a year, {self.genres} genres) from "
                f"{source} into {self.url}{ignored}")


def import_catalog(source: Path | str, lake: Lake | Path | str) -> CatalogImport:
    """Read the catalog file `source`, check it, and replace the lake's reference table (`MOVIES`) with it,
    written as the MovieLens replay writes it (one Parquet file, replaced atomically); a `CatalogError` leaves the
    lake's table as it was."""
    source = Path(source)
    table = read_catalog_file(source)
    catalog = conform_catalog(table, source)
    lake = as_lake(lake)
    path = lake.path(MOVIES)
    buffer = pa.BufferOutputStream()
    pq.write_table(catalog, buffer)
    RemoteDirectory(lake.uri(path), lake.filesystem, path).write_bytes(MOVIES_FILE, buffer.getvalue().to_pybytes())
    genres = pc.unique(pc.list_flatten(catalog["genres"]))
    return CatalogImport(url=lake.uri(path), items=catalog.num_rows,
                         items_with_year=catalog.num_rows - catalog["year"].null_count, genres=len(genres),
                         ignored_columns=tuple(name for name in table.column_names if name not in REQUIRED_COLUMNS))


def read_catalog_file(source: Path) -> pa.Table:
    """The rows of a `.parquet` or `.csv` file as they are (a CSV's columns all as text, empty cells null)."""
    if not source.is_file():
        raise CatalogError(f"{source}: no such file; give the path of a .parquet or .csv catalog")
    suffix = source.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pq.read_table(source)
        if suffix == ".csv":
            header = pacsv.open_csv(source).schema.names
            return pacsv.read_csv(source, convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header}, strings_can_be_null=True))
    except (pa.ArrowInvalid, OSError) as error:
        raise CatalogError(f"{source}: not a readable {suffix[1:]} file ({error})") from None
    raise CatalogError(f"{source}: a catalog is a .parquet or .csv file (columns {', '.join(REQUIRED_COLUMNS)}), "
                       f"not {suffix or 'a file without extension'}")


def conform_catalog(table: pa.Table, source: Path) -> pa.Table:
    """`table` with the reference table's columns and types (`MOVIES_SCHEMA`), or a `CatalogError` listing every
    problem: a missing column, a column of the wrong type, null or duplicate item ids, implausible years.

    An integer item_id becomes its decimal text (what ingestion writes for an event's integer id); a CSV's genres
    are `a|b|c`, a Parquet file's a list of strings (or such text); a null genres is an empty list."""
    missing = [name for name in REQUIRED_COLUMNS if name not in table.column_names]
    if missing:
        raise CatalogError(f"{source}: missing column(s) {', '.join(missing)}; found {', '.join(table.column_names)}. "
                           f"A catalog has the columns {', '.join(REQUIRED_COLUMNS)} (a CSV with a header line)")
    if table.num_rows == 0:
        raise CatalogError(f"{source}: the catalog has no rows")
    problems: list[str] = []
    columns = {}
    for name, conform in (("item_id", _item_ids), ("title", _titles), ("year", _years), ("genres", _genres)):
        try:
            columns[name] = conform(table[name].combine_chunks())
        except CatalogError as problem:
            problems.append(str(problem))
    if "item_id" in columns:
        problems += _item_id_problems(columns["item_id"])
    if problems:
        raise CatalogError(f"{source}: " + "; ".join(problems))
    return pa.table([columns[name] for name in REQUIRED_COLUMNS], schema=MOVIES_SCHEMA)


def _rows(mask: pa.Array, values: pa.Array) -> str:
    """`rows 3 ('x'), 7 ('y') and 4 more`: the first bad rows (1-based, as a CSV's data lines count) with values."""
    indices = pc.indices_nonzero(pc.fill_null(mask, False)).to_pylist()
    shown = ", ".join(f"{index + 1} ({values[index].as_py()!r})" for index in indices[:ROWS_SHOWN])
    more = f" and {len(indices) - ROWS_SHOWN} more" if len(indices) > ROWS_SHOWN else ""
    return f"row{'s' if len(indices) > 1 else ''} {shown}{more}"


def _item_ids(column: pa.Array) -> pa.Array:
    if pa.types.is_integer(column.type):
        return pc.cast(column, pa.string())
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return pc.cast(pc.utf8_trim_whitespace(column), pa.string())
    raise CatalogError(f"item_id is {column.type}: it must be text or an integer (the ids the events carry)")


def _item_id_problems(ids: pa.Array) -> list[str]:
    problems = []
    empty = pc.or_kleene(pc.is_null(ids), pc.equal(ids, ""))
    if pc.any(empty).as_py():
        problems.append(f"item_id is empty in {_rows(empty, ids)}: every item needs an id")
    counts = pc.value_counts(pc.drop_null(ids))
    repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    if len(repeated):
        duplicate = pc.is_in(ids, value_set=repeated)
        problems.append(f"item_id {', '.join(repr(v) for v in repeated.to_pylist()[:ROWS_SHOWN])} "
                        f"occur more than once ({_rows(duplicate, ids)}): keep one row per item")
    return problems


def _titles(column: pa.Array) -> pa.Array:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return pc.cast(column, pa.string())
    raise CatalogError(f"title is {column.type}: it must be text")


def _years(column: pa.Array) -> pa.Array:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        text = pc.utf8_trim_whitespace(column)
        blank = pc.equal(text, "")
        not_integer = pc.and_(pc.invert(blank), pc.invert(pc.match_substring_regex(text, r"^-?\d{1,9}$")))
        if pc.any(not_integer).as_py():
            raise CatalogError(f"year is not a whole number in {_rows(not_integer, column)}: write a year such as "
                               "1995, or leave it empty when unknown")
        column = pc.cast(pc.if_else(blank, None, text), pa.int64())
    elif pa.types.is_floating(column.type):
        fractional = pc.not_equal(pc.floor(column), column)
        if pc.any(fractional).as_py():
            raise CatalogError(f"year is not a whole number in {_rows(fractional, column)}: write a year such as "
                               "1995, or null when unknown")
        column = pc.cast(column, pa.int64())
    elif not pa.types.is_integer(column.type):
        raise CatalogError(f"year is {column.type}: it must be a whole number (or null when unknown)")
    implausible = pc.or_(pc.less(column, MIN_YEAR), pc.greater(column, MAX_YEAR))
    if pc.any(implausible).as_py():
        raise CatalogError(f"year is outside {MIN_YEAR}..{MAX_YEAR} in {_rows(implausible, column)}: write the "
                           "four-digit release year, or leave it empty when unknown")
    return pc.cast(column, pa.int32())


def _genres(column: pa.Array) -> pa.Array:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = pc.split_pattern(pc.fill_null(pc.cast(column, pa.string()), ""), CSV_GENRE_SEPARATOR)
    elif not ((pa.types.is_list(column.type) or pa.types.is_large_list(column.type))
              and (pa.types.is_string(column.type.value_type) or pa.types.is_large_string(column.type.value_type))):
        raise CatalogError(f"genres is {column.type}: it must be a list of strings, or text such as "
                           f"'Action{CSV_GENRE_SEPARATOR}Comedy'")
    names = [list(dict.fromkeys(genre.strip() for genre in row or [] if genre and genre.strip()))
             for row in column.to_pylist()]
    return pa.array(names, pa.list_(pa.string()))
