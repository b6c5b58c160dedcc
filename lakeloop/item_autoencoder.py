"""An item-based autoencoder of the day's ratings (I-AutoRec, Sedhain et al. 2015), fitted beside the FM and blended
into its rating: each item's ratings by all users are encoded and decoded back to every user, so an item is described
by who rated it how, which the FM's per-example fields do not see.

See docs/tfspark.md (the FM trainer) and docs/performance.md (Model quality).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)
LEARNING_RATE = 1e-3
ITEMS_PER_STEP = 256
LOG_EVERY_EPOCHS = 20


@dataclass(frozen=True)
class AutoencoderTables:
    """A fitted autoencoder as two lookup tables, so that rating(u, i) = <item_codes[i], user_decoder[u]> over all
    but the last column: an item's code (its encoded ratings, then 1) and a user's decoder row (then the user's
    bias). The last column of each is 1 for a user or item with training ratings and 0 otherwise: the autoencoder
    says nothing about them."""

    item_codes: np.ndarray
    user_decoder: np.ndarray
    seconds: float
    train_rmse: float

    def rating(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """The autoencoder's rating of each (user, item) pair (meaningful where both are known)."""
        codes, decoder = self.item_codes[item_idx, :-1], self.user_decoder[user_idx, :-1]
        return np.sum(codes.astype(np.float64) * decoder, axis=-1)


def fit_item_autoencoder(user_idx: np.ndarray, item_idx: np.ndarray, ratings: np.ndarray, user_vocab_size: int,
                         item_vocab_size: int, units: int, l2: float, epochs: int, seed: int) -> AutoencoderTables:
    """Fit the autoencoder on the day's training ratings (vocabulary indices, index 0 the unknown id).

    Loss: the squared error on the observed ratings + `l2` / 2 × the squared weights of encoder and decoder (spread
    over the steps of an epoch); Adam at `LEARNING_RATE`, decayed along a cosine to 0 over `epochs` passes over the
    items in a seeded order, `ITEMS_PER_STEP` items a step. Dense: memory and time grow with items × users.
    """
    import tensorflow as tf

    started = time.monotonic()
    user_idx, item_idx = np.asarray(user_idx, np.int64), np.asarray(item_idx, np.int64)
    matrix = np.zeros((item_vocab_size, user_vocab_size), np.float32)
    observed = np.zeros_like(matrix)
    matrix[item_idx, user_idx] = np.asarray(ratings, np.float32)
    observed[item_idx, user_idx] = 1.0
    observed[0, :] = observed[:, 0] = 0.0
    matrix *= observed
    tf.random.set_seed(seed)
    encoder = tf.Variable(tf.random.normal((user_vocab_size, units), stddev=0.03), name="encoder")
    encoder_bias = tf.Variable(tf.zeros(units), name="encoder_bias")
    decoder = tf.Variable(tf.random.normal((user_vocab_size, units), stddev=0.03), name="decoder")
    decoder_bias = tf.Variable(tf.zeros(user_vocab_size), name="decoder_bias")
    weights = [encoder, encoder_bias, decoder, decoder_bias]
    steps_per_epoch = -(-item_vocab_size // ITEMS_PER_STEP)
    schedule = tf.keras.optimizers.schedules.CosineDecay(LEARNING_RATE, max(epochs * steps_per_epoch, 1))
    optimizer = tf.keras.optimizers.Adam(schedule)
    matrix_tensor, observed_tensor = tf.constant(matrix), tf.constant(observed)
    share = tf.constant(l2 / 2 / steps_per_epoch, tf.float32)

    def encode(rows: tf.Tensor) -> tf.Tensor:
        return tf.sigmoid(tf.matmul(rows, encoder) + encoder_bias)

    def step(items: tf.Tensor) -> tf.Tensor:
        rows, mask = tf.gather(matrix_tensor, items), tf.gather(observed_tensor, items)
        with tf.GradientTape() as tape:
            decoded = tf.matmul(encode(rows), decoder, transpose_b=True) + decoder_bias
            squared = tf.reduce_sum(mask * tf.square(decoded - rows))
            loss = squared + share * (tf.reduce_sum(tf.square(encoder)) + tf.reduce_sum(tf.square(decoder)))
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights, strict=True))
        return squared

    @tf.function(input_signature=[tf.TensorSpec((None, item_vocab_size), tf.int32)])
    def run_epochs(orders: tf.Tensor) -> tf.Tensor:
        squared = tf.constant(0.0)
        for epoch in tf.range(tf.shape(orders)[0]):
            squared = tf.constant(0.0)
            for first in range(0, item_vocab_size, ITEMS_PER_STEP):
                squared += step(orders[epoch, first:first + ITEMS_PER_STEP])
        return squared

    optimizer.build(weights)
    rng = np.random.default_rng(seed)
    orders = np.stack([rng.permutation(item_vocab_size) for _ in range(epochs)]).astype(np.int32)
    count = max(float(observed.sum()), 1.0)
    squared_error = 0.0
    for first in range(0, epochs, LOG_EVERY_EPOCHS):
        squared_error = float(run_epochs(tf.constant(orders[first:first + LOG_EVERY_EPOCHS])))
        log.info("item autoencoder epoch %d/%d: training RMSE %.4f (%.0f s)", min(first + LOG_EVERY_EPOCHS, epochs),
                 epochs, (squared_error / count) ** 0.5, time.monotonic() - started)
    codes = np.concatenate([encode(tf.constant(matrix[first:first + 4096])).numpy()
                            for first in range(0, item_vocab_size, 4096)])
    item_known = (observed.sum(axis=1) > 0).astype(np.float32)[:, None]
    user_known = (observed.sum(axis=0) > 0).astype(np.float32)[:, None]
    item_codes = np.concatenate([codes, np.ones_like(item_known), item_known], axis=1)
    user_decoder = np.concatenate([decoder.numpy(), decoder_bias.numpy()[:, None], user_known], axis=1)
    return AutoencoderTables(item_codes.astype(np.float32), user_decoder.astype(np.float32),
                             seconds=time.monotonic() - started, train_rmse=(squared_error / count) ** 0.5)
