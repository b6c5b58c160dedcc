"""Warm start against a cold start over replayed days (issue 19): MovieLens 100K replayed over `--days` days into a
lake, each day's features built by the real jobs, and from the second day on the FM trained cold (one model per
`--cold-seeds` seed) and warm (one chain per `--scales` value of `warm_factor_scale`, each day starting from its
chain's model of the day before; the chains start from the first day's cold model), all scored with both baselines on
the day's evaluation set; a table of RMSE, NDCG@10 and training seconds a day, and as the last line one JSON object.

    .venv/bin/python -m bench.warm_start_days
    .venv/bin/python -m bench.warm_start_days --ratings 5000 --days 3 --hparam epochs=1   # a smoke run

See docs/performance.md (Warm start).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from bench.harness import git_head, markdown_table, print_json_line, start_spark, work_directory
from bench.support.fm_training import train_in_process
from bench.support.movielens_lake import END_DAY, curate_days, replay_to_lake
from jobs import features
from lakeloop.evaluation import evaluate_model
from lakeloop.features import read_feature_summary
from lakeloop.fm_trainer import FMTrainer
from lakeloop.lake import Lake, window_days
from lakeloop.models import model_dir
from lakeloop.warm_start import WarmStart

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakeloop.movielens import MovieLens

COLD = "cold"
WARM_SPARK_CONF = {"spark.sql.shuffle.partitions": "4", "spark.python.worker.reuse": "true"}


@dataclass(frozen=True)
class StartingModel:
    """A model of this benchmark's lake to start a day's training from: its name and the day it was trained on."""

    model_name: str
    day: date


class ReplayedDayTrainer(FMTrainer):
    """The FM trainer warm-starting from a model the benchmark picks (its chain's model of the day before) instead
    of the registry's champion: the replayed days have no registry, and every chain keeps its own models."""

    def __init__(self, start_from: StartingModel | None, **kwargs: str) -> None:
        super().__init__(**kwargs)
        self.start_from = start_from

    def starting_model(self, lake: Lake) -> WarmStart | None:
        """The chain's model of the day before, or None (a cold start)."""
        if self.start_from is None:
            return None
        return WarmStart.of_model(lake, self.start_from.model_name, self.start_from.day, self.day,
                                  version=f"{self.start_from.model_name}@{self.start_from.day}")


@dataclass(frozen=True)
class DayRun:
    """One model of one replayed day: which chain (`cold-seed<N>` or `warm×<scale>`), the epochs it trained, its
    training seconds, RMSE and NDCG@10, the day's baselines, and the day its warm start came from."""

    day: date
    chain: str
    epochs: int
    seconds: float
    rmse: float
    ndcg_at_10: float
    bias_rmse: float
    popularity_ndcg_at_10: float
    train_rows: int
    started_from: str | None


def cold_chain(seed: int) -> str:
    """The model name of the cold models trained with `seed`."""
    return f"{COLD}-seed{seed}"


def warm_chain(scale: float) -> str:
    """The model name of the warm chain with `warm_factor_scale` = `scale`."""
    return f"warm-x{scale:g}"


def train_day(spark: SparkSession, lake: Path, day: date, chain: str, hparams: dict[str, str],
              start_from: StartingModel | None) -> DayRun:
    """Train `chain`'s model of `day` (warm from `start_from` if given, cold otherwise) in this process and score it."""
    trainer = ReplayedDayTrainer(start_from, lake=str(lake), day=day.isoformat(), model_name=chain, **hparams)
    examples = trainer.pre_train(spark).toArrow()
    started = time.monotonic()
    summary = train_in_process(trainer, examples, model_dir(lake, chain, day))
    seconds = time.monotonic() - started
    metrics = evaluate_model(lake, chain, day)
    warm = summary.get("warm_start")
    return DayRun(day=day, chain=chain, epochs=int(summary["epochs_trained"]), seconds=seconds, rmse=metrics["rmse"],
                  ndcg_at_10=metrics["ndcg_at_10"], bias_rmse=metrics["bias_baseline_rmse"],
                  popularity_ndcg_at_10=metrics["popularity_ndcg_at_10"],
                  train_rows=read_feature_summary(lake, day)["train_rows"],
                  started_from=warm["from_version"] if warm else None)


def run_days(spark: SparkSession, movielens: MovieLens, workdir: Path, days: int, cold_seeds: list[int],
             scales: list[float], hparams: dict[str, str], progress=print) -> list[DayRun]:
    """Replay, curate and build every day's features; train the first day cold, then every later day cold per seed
    and warm per scale."""
    lake = workdir / "lake"
    replay_to_lake(movielens, lake, days, END_DAY)
    curate_days(spark, lake, days, END_DAY)
    replayed = window_days(END_DAY, days)
    runs: list[DayRun] = []
    previous: dict[str, StartingModel] = {}
    for index, day in enumerate(replayed):
        features.run(spark, lake, day)
        for seed in cold_seeds if index else cold_seeds[:1]:
            runs.append(train_day(spark, lake, day, cold_chain(seed), {**hparams, "seed": str(seed),
                                                                       "warm_start": "none"}, None))
            progress(describe(runs[-1]))
        if index:
            for scale in scales:
                chain = warm_chain(scale)
                runs.append(train_day(spark, lake, day, chain, {**hparams, "warm_factor_scale": str(scale)},
                                      previous[chain]))
                progress(describe(runs[-1]))
                previous[chain] = StartingModel(chain, day)
        else:
            previous = {warm_chain(scale): StartingModel(cold_chain(cold_seeds[0]), day) for scale in scales}
    return runs


def describe(run: DayRun) -> str:
    """One run as a progress line."""
    start = f" from {run.started_from}" if run.started_from else ""
    return (f"{run.day} {run.chain}{start}: {run.epochs} epochs {run.seconds:.1f} s, RMSE {run.rmse:.4f} "
            f"(bias {run.bias_rmse:.4f}), NDCG@10 {run.ndcg_at_10:.4f} (popularity {run.popularity_ndcg_at_10:.4f})")


def later_days(runs: list[DayRun]) -> list[date]:
    """The days with warm runs (every replayed day but the first)."""
    return sorted({run.day for run in runs if run.started_from})


def by_day_and_chain(runs: list[DayRun]) -> dict[tuple[date, str], DayRun]:
    """The runs keyed by (day, chain)."""
    return {(run.day, run.chain): run for run in runs}


def cold_mean(keyed: dict[tuple[date, str], DayRun], day: date, cold_seeds: list[int], field: str) -> float:
    """The mean of `field` over the day's cold models (`keyed` by `by_day_and_chain`)."""
    return statistics.fmean(getattr(keyed[day, cold_chain(seed)], field) for seed in cold_seeds)


def summary_figures(runs: list[DayRun], cold_seeds: list[int], scales: list[float]) -> dict:
    """Per warm chain, over the later days: the mean RMSE and NDCG@10 against the cold models' mean, the training
    seconds against the cold models', and the days it beat the bias baseline's RMSE (so would publish by RMSE)."""
    keyed, days = by_day_and_chain(runs), later_days(runs)
    figures: dict = {"days": len(days) + 1, "cold_seeds": cold_seeds,
                     "cold_rmse": statistics.fmean(cold_mean(keyed, day, cold_seeds, "rmse") for day in days),
                     "cold_ndcg_at_10": statistics.fmean(cold_mean(keyed, day, cold_seeds, "ndcg_at_10")
                                                         for day in days),
                     "cold_seed_rmse_range": statistics.fmean(
                         max(keyed[day, cold_chain(seed)].rmse for seed in cold_seeds)
                         - min(keyed[day, cold_chain(seed)].rmse for seed in cold_seeds) for day in days),
                     "cold_days_beating_bias": sum(cold_mean(keyed, day, cold_seeds, "rmse") < keyed[
                         day, cold_chain(cold_seeds[0])].bias_rmse for day in days), "warm": {}}
    for scale in scales:
        chain = [keyed[day, warm_chain(scale)] for day in days]
        figures["warm"][f"{scale:g}"] = {
            "rmse": statistics.fmean(run.rmse for run in chain),
            "rmse_minus_cold": statistics.fmean(run.rmse - cold_mean(keyed, run.day, cold_seeds, "rmse")
                                                for run in chain),
            "ndcg_minus_cold": statistics.fmean(run.ndcg_at_10 - cold_mean(keyed, run.day, cold_seeds, "ndcg_at_10")
                                                for run in chain),
            "seconds_over_cold": sum(run.seconds for run in chain) / sum(
                cold_mean(keyed, run.day, cold_seeds, "seconds") for run in chain),
            "days_beating_bias": sum(run.rmse < run.bias_rmse for run in chain)}
    return figures


def report(runs: list[DayRun], cold_seeds: list[int], scales: list[float], figures: dict) -> list[str]:
    """The per-day table and the summary table, markdown."""
    keyed, days = by_day_and_chain(runs), later_days(runs)
    chains = [cold_chain(seed) for seed in cold_seeds] + [warm_chain(scale) for scale in scales]
    first = runs[0]
    rows = [[first.day, first.train_rows, f"{first.bias_rmse:.4f}", f"{first.rmse:.4f}",
             *["—"] * (len(chains) - 1), f"{first.popularity_ndcg_at_10:.4f}", f"{first.ndcg_at_10:.4f}",
             *["—"] * (len(chains) - 1), f"{first.seconds:.1f}", *["—"] * (len(chains) - 1)]]
    for day in days:
        day_runs = [keyed[day, chain] for chain in chains]
        rows.append([day, day_runs[0].train_rows, f"{day_runs[0].bias_rmse:.4f}",
                     *(f"{run.rmse:.4f}" for run in day_runs), f"{day_runs[0].popularity_ndcg_at_10:.4f}",
                     *(f"{run.ndcg_at_10:.4f}" for run in day_runs),
                     *(f"{run.seconds:.1f} ({run.epochs} ep)" for run in day_runs)])
    lines = markdown_table(["day", "train rows", "bias RMSE", *(f"RMSE {chain}" for chain in chains),
                            "popularity NDCG@10", *(f"NDCG@10 {chain}" for chain in chains),
                            *(f"seconds {chain}" for chain in chains)], rows, "l" + "r" * (2 + 3 * len(chains) + 1))
    lines += ["", f"Over the {len(days)} later days: cold RMSE {figures['cold_rmse']:.4f} (mean of seeds "
                  f"{', '.join(map(str, cold_seeds))}; seeds differ by {figures['cold_seed_rmse_range']:.4f} a day "
                  f"on average), NDCG@10 {figures['cold_ndcg_at_10']:.4f}; cold beat the bias baseline's RMSE on "
                  f"{figures['cold_days_beating_bias']} of {len(days)} days.", ""]
    lines += markdown_table(["warm_factor_scale", "mean RMSE", "RMSE − cold", "NDCG@10 − cold",
                             "training seconds / cold", "days beating bias RMSE"],
                            ([scale, f"{warm['rmse']:.4f}", f"{warm['rmse_minus_cold']:+.4f}",
                              f"{warm['ndcg_minus_cold']:+.4f}", f"{warm['seconds_over_cold']:.2f}",
                              f"{warm['days_beating_bias']} of {len(days)}"]
                             for scale, warm in figures["warm"].items()), "lrrrrr")
    return lines


def parser() -> argparse.ArgumentParser:
    """The command line."""
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--days", type=int, default=6, help="days MovieLens is replayed over (at least 2)")
    args.add_argument("--ratings", type=int, default=0, help="use only the first N ratings (0: all)")
    args.add_argument("--cold-seeds", default="42,7", help="comma-separated seeds of the cold models")
    args.add_argument("--scales", default="1,0.2", help="comma-separated warm_factor_scale values, a chain each")
    args.add_argument("--hparam", action="append", default=[], metavar="NAME=VALUE",
                      help="an FM hyper-parameter for every model (repeatable)")
    args.add_argument("--workdir", type=Path, default=None, help="keep the lake here (default: a temporary one)")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the replayed days, print the tables and the JSON line."""
    from lakeloop.config import load_settings
    from lakeloop.movielens import MovieLens, load_movielens

    options = parser().parse_args(argv)
    if options.days < 2:
        raise SystemExit("--days must be at least 2: the first day has nothing to start warm from")
    cold_seeds = [int(seed) for seed in options.cold_seeds.split(",")]
    scales = [float(scale) for scale in options.scales.split(",")]
    hparams = dict(pair.split("=", 1) for pair in options.hparam)
    movielens = load_movielens(load_settings().dataset_dir)
    if options.ratings:
        movielens = MovieLens(movielens.ratings.slice(0, options.ratings), movielens.movies)
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:5.0f} s, load {os.getloadavg()[0]:.1f}] {message}", flush=True)

    spark = start_spark("lakeloop warm-start benchmark", conf=WARM_SPARK_CONF)
    try:
        with work_directory(options.workdir, "lakeloop-warm-start-") as workdir:
            runs = run_days(spark, movielens, workdir, options.days, cold_seeds, scales, hparams, progress)
    finally:
        spark.stop()
    figures = {**summary_figures(runs, cold_seeds, scales), "hparams": hparams,
               "seconds": round(time.monotonic() - started, 1), "commit": git_head()}
    print("\n".join(["", *report(runs, cold_seeds, scales, figures), ""]), flush=True)
    print_json_line(figures)
    return figures


if __name__ == "__main__":
    main()
