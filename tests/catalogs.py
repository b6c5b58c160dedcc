"""Catalog variants of the tests: MovieLens with the catalog a user's own data set often has."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from lakeloop.movielens import MovieLens


def with_integer_item_ids(movielens: MovieLens) -> MovieLens:
    """The same ratings, with a catalog whose `item_id` is int64 (the events' type) instead of MovieLens' strings."""
    movies = movielens.movies
    return MovieLens(movielens.ratings, movies.set_column(movies.schema.get_field_index("item_id"), "item_id",
                                                          pc.cast(movies["item_id"], pa.int64())))
