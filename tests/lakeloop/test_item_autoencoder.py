"""The item autoencoder: it learns ratings it did not see from the items' other ratings, and flags the users and
items it knows nothing about."""

from __future__ import annotations

import numpy as np

from lakeloop.item_autoencoder import fit_item_autoencoder


def low_rank_ratings(users: int, items: int, seed: int = 0) -> np.ndarray:
    """A ratings matrix (items × users) of two latent tastes, 1..5, index 0 of each side left empty (the OOV row)."""
    rng = np.random.default_rng(seed)
    tastes = rng.normal(0, 1, (users, 2))
    kinds = rng.normal(0, 1, (items, 2))
    ratings = np.clip(np.rint(3 + kinds @ tastes.T + rng.normal(0, 0.3, (items, users))), 1, 5)
    ratings[0, :] = ratings[:, 0] = 0
    return ratings


def test_held_out_ratings_are_predicted_better_than_by_each_items_mean():
    ratings = low_rank_ratings(users=80, items=60)
    items, users = np.nonzero(ratings)
    rng = np.random.default_rng(1)
    held_out = rng.random(len(items)) < 0.2
    train = ~held_out
    tables = fit_item_autoencoder(users[train], items[train], ratings[items[train], users[train]], 80, 60,
                                  units=64, l2=1.0, epochs=3000, seed=0)
    truth = ratings[items[held_out], users[held_out]]
    predicted = tables.rating(users[held_out], items[held_out])
    sums = np.bincount(items[train], ratings[items[train], users[train]], minlength=60)
    item_mean = sums / np.maximum(np.bincount(items[train], minlength=60), 1)
    rmse, mean_rmse = (np.sqrt(np.mean((guess - truth) ** 2)) for guess in (predicted, item_mean[items[held_out]]))
    assert rmse < 0.6 * mean_rmse, (rmse, mean_rmse)
    assert tables.train_rmse < mean_rmse


def test_users_and_items_without_ratings_are_flagged_unknown():
    tables = fit_item_autoencoder(np.array([1, 2, 2]), np.array([1, 1, 3]), np.array([4.0, 2.0, 5.0]), 4, 5,
                                  units=4, l2=1.0, epochs=2, seed=0)
    assert tables.item_codes.shape == (5, 6) and tables.user_decoder.shape == (4, 6)
    np.testing.assert_array_equal(tables.item_codes[:, -1], [0, 1, 0, 1, 0])
    np.testing.assert_array_equal(tables.user_decoder[:, -1], [0, 1, 1, 0])
    np.testing.assert_array_equal(tables.item_codes[:, -2], 1.0)
