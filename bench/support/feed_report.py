"""The feed benchmark's results and their markdown report: the feed, training, RSS and scaling tables and the target
checks, ready to paste into docs/performance.md.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from dataclasses import dataclass
from typing import Any

from bench.harness import Measurement, markdown_table, table_header, table_row, verdict
from bench.support.feed_probe import CACHED_PASSES, examples_per_second
from bench.support.rival_feeds import BATCH_SIZE

TARGETS = {"feed_vs_tfos": 10.0, "feed_vs_limit": 0.5, "train_vs_numpy": 0.9}
RATIO_NAMES = {
    "feed_vs_tfos": "feed (d1) first pass, the FM pipeline's path / (a) TFoS-style",
    "feed_vs_limit": "feed (d1) first pass, the FM pipeline's path / (e) pyarrow limit",
    "train_vs_numpy": "FM training (d) / in-memory numpy",
    "spark_arrow_vs_tfos": "for information, no target: feed (d2) Spark → Arrow first pass / (a) TFoS-style",
    "spark_arrow_vs_limit": "for information, no target: feed (d2) Spark → Arrow first pass / (e) pyarrow limit",
    "cached_vs_limit": "for information, no target: feed (d) cached passes / (e) pyarrow limit",
}


@dataclass
class BenchmarkResults:
    """Every figure of one run: the best round of each feed and of each training source."""

    rows: int
    epochs: int
    repeat: int
    feeds: list[Measurement]
    petastorm: str
    training: dict[str, dict[str, Any]]
    rss_runs: list[tuple[int, int, dict[str, Any]]]
    rss_workers: int
    round_ratios: list[dict[str, float]]
    scaling: list[tuple[int, Measurement, Measurement]] = dataclasses.field(default_factory=list)
    tensorflow_import_seconds: float | None = None

    def feed(self, prefix: str) -> Measurement:
        """The feed result whose name starts with `prefix`, e.g. "(a)"."""
        return next(result for result in self.feeds if result.name.startswith(prefix))

    @property
    def ratios(self) -> dict[str, float]:
        """The target ratios between the best round of each alternative."""
        return target_ratios(self.feeds, self.training)


def target_ratios(feeds: list[Measurement], training: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The target ratios (feed (d1)/(a), (d1)/(e), training (d)/numpy), plus (d2)/(a), (d2)/(e), cached/(e).

    The feed targets are checked on (d1), the direct Parquet path, which `lakeloop.fm_trainer.FMTrainer` takes.
    """

    def rate(prefix: str) -> float:
        return next(result for result in feeds if result.name.startswith(prefix)).rows_per_second

    direct, spark_arrow, tfos, limit = rate("(d1)"), rate("(d2)"), rate("(a)"), rate("(e)")
    return {
        "feed_vs_tfos": direct / tfos,
        "feed_vs_limit": direct / limit,
        "train_vs_numpy": examples_per_second(training["arrow"]) / examples_per_second(training["numpy"]),
        "spark_arrow_vs_tfos": spark_arrow / tfos,
        "spark_arrow_vs_limit": spark_arrow / limit,
        "cached_vs_limit": rate(CACHED_PASSES) / limit,
    }


def ratio_line(name: str, best: float, rounds: list[float], target: float | None) -> str:
    """One target check: the ratio of the best rounds, each round's own ratio, and `harness.verdict` on the target."""
    per_round = f"; per round {', '.join(f'{value:.2f}×' for value in rounds)}" if len(rounds) > 1 else ""
    if target is None:
        return f"- {name}: {best:.2f}×{per_round}"
    median = statistics.median(rounds) if rounds else best
    best_of = " best of each" if len(rounds) > 1 else ""
    return f"- {name}: {best:.2f}×{best_of}{per_round} (target ≥ {target:g}×) — {verdict(best, median, target)}"


def feed_table(results: list[Measurement], petastorm: str, tfos: Measurement, limit: Measurement) -> list[str]:
    """The feed table in markdown, with each row's ratio to (a) and to (e)."""
    lines = table_header(["feed (batches of 1024 → TF tensors)", "rows", "seconds", "rows/s", "vs (a)", "vs (e)",
                          "note"], "lrrrrrl")
    for result in results:
        rate = result.rows_per_second
        lines.append(table_row([result.name, f"{result.rows:,}", f"{result.seconds:.2f}", f"{rate:,.0f}",
                                f"{rate / tfos.rows_per_second:.2f}×", f"{rate / limit.rows_per_second:.2f}×",
                                result.note]))
        if result.name.startswith("(b)"):
            lines.append(table_row(["(c) petastorm make_spark_converter", *["–"] * 5, petastorm]))
    return lines


def training_table(training: dict[str, dict[str, Any]]) -> list[str]:
    """FM training examples/s fed by the Arrow feed vs by in-memory numpy, in markdown."""
    numpy_rate = examples_per_second(training["numpy"])
    rows = []
    for key, name in (("numpy", "in-memory numpy → tf.data"), ("arrow", "tfspark feed (cache; direct Parquet)")):
        run = training[key]
        rate = examples_per_second(run)
        rounds = ", ".join(f"{value:,.0f}" for value in run.get("rounds", [rate]))
        rows.append([name, f"{run['examples']:,}", f"{run['seconds']:.2f}", f"{rate:,.0f}",
                     f"{rate / numpy_rate:.2f}×", f"{run['loss']:.4f}", rounds])
    return markdown_table(["FM training (ctx.fit, 1 worker)", "examples", "seconds", "examples/s", "vs numpy",
                           "final loss", "rounds"], rows, "lrrrrrl")


def rss_table(rss_runs: list[tuple[int, int, dict[str, Any]]]) -> list[str]:
    """Peak RSS of each worker at each size and cache limit, in markdown."""
    rows = []
    for rows_in, limit_bytes, summary in rss_runs:
        rows.append([f"{rows_in:,}", summary["workers"], summary["feed_path"],
                     ", ".join(f"{count:,}" for count in summary["worker_rows"]), f"{limit_bytes / 2**20:g} MiB",
                     ", ".join("yes" if flag else "no" for flag in summary["cache_spilled"]),
                     ", ".join(f"{peak / 2**20:,.0f}" for peak in summary["peak_rss_bytes"])])
    return markdown_table(["rows", "workers", "feed path", "rows per worker", "cache memory limit", "spilled",
                           "peak RSS per worker (MiB)"], rows, "rrllrll")


def scaling_table(scaling: list[tuple[int, Measurement, Measurement]]) -> list[str]:
    """(d1)'s first pass against (e) by table size, in markdown."""
    return markdown_table(
        ["rows", "(e) seconds", "(d1) first pass seconds", "(d1) / (e)", "(d1) split (best round)"],
        ([f"{rows:,}", f"{limit.seconds:.2f}", f"{direct.seconds:.2f}",
          f"{direct.rows_per_second / limit.rows_per_second:.2f}×", direct.note.split("; best")[0]]
         for rows, limit, direct in scaling), "rrrrl")


def tensorflow_import_note(seconds: float | None) -> str:
    """What the table leaves out: a fresh worker's TensorFlow import."""
    measured = f"{seconds:.2f}s here" if seconds is not None else "not measured in a --quick run"
    return ("Every alternative runs with TensorFlow already imported: (d)'s Spark workers fork from a daemon that "
            f"imported it. A fresh worker pays the import once per training job ({measured}); on the direct path "
            "its partition is read in the background meanwhile.")


def markdown_report(results: BenchmarkResults) -> str:
    """The tables and the target checks, ready to paste into docs/performance.md."""
    ratios = results.ratios
    steps = results.training["arrow"]["examples"] // BATCH_SIZE
    rounds = f"best of {results.repeat} rounds" if results.repeat > 1 else "one round"
    lines = [
        f"### Feed: {results.rows:,} rows → batches of {BATCH_SIZE} as TF tensors, one consumer, local[2] "
        f"({os.cpu_count()} cores, {rounds})",
        "",
        *feed_table(results.feeds, results.petastorm, results.feed("(a)"), results.feed("(e)")),
        "",
        tensorflow_import_note(results.tensorflow_import_seconds),
        "",
        f"### FM training: {steps:,} steps ({results.epochs} epochs) of {BATCH_SIZE}, one worker, same task, "
        f"same loop (`ctx.fit`), {rounds}",
        "",
        *training_table(results.training),
        "",
        f"### Peak RSS per worker ({results.rss_workers} workers, one pass over the data; each worker imports "
        "TensorFlow itself, as in a real job)",
        "",
        *rss_table(results.rss_runs),
        "",
        *([f"### Feed (d1) first pass against (e) by size, best of {results.repeat}", "",
           *scaling_table(results.scaling), ""] if results.scaling else []),
        "### Targets",
        "",
        *(ratio_line(name, ratios[key], [round_[key] for round_ in results.round_ratios], TARGETS.get(key))
          for key, name in RATIO_NAMES.items()),
    ]
    return "\n".join(lines)
