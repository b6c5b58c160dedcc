"""What a day's commit costs on the Spark side: one day of curated-ratings-shaped rows rewritten and read back by one
local[2] Spark session two ways, side by side with Spark's plain Parquet (no commit: the limit) — delta-spark
(`replaceWhere`), and the Spark jobs' own commit, Spark's Parquet files committed by delta-rs in one overwrite of the
day (`lakeloop.spark_jobs.write_partition`, read back by `read_table`) — then an interop check: delta-spark reads the
delta-rs table and delta-rs the delta-spark one. The manifest commit it also measured until the Spark jobs' tables
became Delta tables no longer exists: the manifest figures in docs/performance.md are historical.

    .venv/bin/python -m bench.spark_delta_commits --rows 1000000 --repeat 5     # a 1M-event day's curated rows
    .venv/bin/python -m bench.spark_delta_commits --quick                       # a tiny day, cold + one round

Needs jvm/lib/delta/ (`make setup`). See docs/performance.md, "On the Spark side".
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from bench.harness import (
    REPO,
    child_environment,
    last_json_line,
    local_environment,
    markdown_table,
    print_json_line,
    round_order,
    work_directory,
)
from lakeloop.delta import day_predicate, read_partition, table_uri
from lakeloop.lake import Lake
from lakeloop.spark_jobs import read_table, write_partition

DAY = date(2026, 11, 20)
OTHER_DAYS = {date(2026, 11, 19): 300, date(2026, 11, 21): 700}  # rows of each: the interop check tells days apart
DELTA_JARS = REPO / "jvm" / "lib" / "delta"
SPARK_CONF_DIR = REPO / "conf" / "spark"
PLAIN, DELTA_SPARK, DELTA_RS = ("plain Parquet (no commit)", "delta-spark replaceWhere",
                                 "Spark Parquet + delta-rs commit")
WAYS = (PLAIN, DELTA_SPARK, DELTA_RS)
DATASETS = {PLAIN: "bench-plain", DELTA_SPARK: "bench-delta-spark", DELTA_RS: "bench-delta-rs"}


def delta_spark_conf() -> dict[str, str]:
    """What a session needs to read and write Delta tables with delta-spark: its jars, SQL extension and catalog.

    One snapshot partition: reconstructing a table's state from its log shuffles into
    `spark.databricks.delta.snapshotPartitions` partitions (50 by default), 50 tiny tasks per read of a small log.
    """
    jars = sorted(DELTA_JARS.glob("*.jar"))
    if not jars:
        raise FileNotFoundError(f"{DELTA_JARS} holds no jars: run `make setup` (it resolves delta-spark from Maven "
                                "Central into jvm/lib/delta/) and run the benchmark again")
    return {"spark.jars": ",".join(str(jar) for jar in jars),
            "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
            "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
            "spark.databricks.delta.snapshotPartitions": "1"}


def start_session(with_delta: bool) -> SparkSession:
    """A local[2] session with the Spark jobs' defaults (conf/spark as SPARK_CONF_DIR), with delta-spark or not.

    It must be the process's first: jars reach a JVM only when it starts, and the Delta catalog set on a running
    session without them breaks that session for everyone else (run the benchmark as its own process)."""
    if SparkSession.getActiveSession() is not None:
        raise RuntimeError("bench.spark_delta_commits needs a process without a Spark session: delta-spark's jars "
                           "reach a JVM only when it starts. Run `python -m bench.spark_delta_commits`.")
    local_environment()
    os.environ["SPARK_CONF_DIR"] = str(SPARK_CONF_DIR)
    builder = SparkSession.builder.master("local[2]").appName("spark-delta-commits").config("spark.ui.enabled", "false")
    for key, value in (delta_spark_conf() if with_delta else {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def session_start_seconds(with_delta: bool) -> float:
    """Seconds a fresh process takes to start a session and run its first job (a child process: a JVM of its own)."""
    code = ("import time; started = time.monotonic(); from bench.spark_delta_commits import start_session; "
            f"start_session({with_delta}).range(1).count(); print(time.monotonic() - started)")
    completed = subprocess.run([sys.executable, "-c", code], env=child_environment(),
                               check=True, capture_output=True, text=True)
    return float(last_json_line(completed.stdout))


def curated_rows(spark: SparkSession, rows: int, day: date) -> DataFrame:
    """`rows` rows shaped like a day of curated ratings (`jobs/etl.py`'s CURATED_COLUMNS), cached and counted so no
    timing includes making them."""
    start = f"{day.isoformat()} 00:00:00"
    frame = (spark.range(rows, numPartitions=2)
             .select(F.format_string("e-%d", "id").alias("event_id"),
                     (F.col("id") % 6040 + 1).cast("string").alias("user_id"),
                     (F.col("id") * 7 % 3706 + 1).cast("string").alias("item_id"),
                     ((F.col("id") % 10 + 1) / 2).cast("double").alias("rating"),
                     (F.to_timestamp(F.lit(start)) + F.make_interval(secs=F.col("id") % 86_400)).alias("ts"),
                     F.lit(day).alias("arrival_dt"),
                     F.format_string("Movie %d", F.col("id") * 7 % 3706 + 1).alias("title"),
                     (F.col("id") % 80 + 1940).cast("int").alias("year"),
                     F.array(F.lit("Drama"), F.when(F.col("id") % 3 == 0, "Comedy").otherwise("Action"))
                     .alias("genres"),
                     (F.col("id") % 50 != 0).alias("in_catalog"))
             .cache())
    frame.count()
    return frame


@dataclass(frozen=True)
class Tables:
    """Where each way's table lives: the lake and its URIs as Spark and delta-rs reach them."""

    lake: Lake

    def spark_uri(self, way: str) -> str:
        """The table's root as Spark names it."""
        return self.lake.spark_uri(self.lake.path(DATASETS[way]))

    def delta_uri(self, way: str) -> str:
        """The table's root as delta-rs names it."""
        return table_uri(self.lake, DATASETS[way])


def plain_write(tables: Tables, frame: DataFrame, day: date) -> None:
    """Spark's Parquet files over the day's last ones, nothing committed."""
    frame.write.mode("overwrite").parquet(f"{tables.spark_uri(PLAIN)}/dt={day.isoformat()}")


def delta_spark_write(tables: Tables, frame: DataFrame, day: date) -> None:
    """delta-spark replacing the day (`replaceWhere`) in one commit."""
    (frame.withColumn("dt", F.lit(day.isoformat())).write.format("delta").mode("overwrite")
     .option("replaceWhere", day_predicate(day)).partitionBy("dt").save(tables.spark_uri(DELTA_SPARK)))


def delta_rs_write(tables: Tables, frame: DataFrame, day: date) -> None:
    """The Spark jobs' commit (`write_partition`): Spark writes the day's files into an attempt folder under `dt=D/`,
    delta-rs commits them in one overwrite of the day (a first write creates the table)."""
    write_partition(frame, tables.lake, DATASETS[DELTA_RS], day, {"written_by": "bench.spark_delta_commits"})


def plain_read(spark: SparkSession, tables: Tables, day: date) -> DataFrame:
    """The day's folder as a Parquet scan."""
    return spark.read.parquet(f"{tables.spark_uri(PLAIN)}/dt={day.isoformat()}")


def delta_spark_read(spark: SparkSession, tables: Tables, day: date) -> DataFrame:
    """delta-spark's scan of the table, pruned to the day."""
    return spark.read.format("delta").load(tables.spark_uri(DELTA_SPARK)).where(day_predicate(day))


def delta_rs_read(spark: SparkSession, tables: Tables, day: date) -> DataFrame:
    """The day's files as delta-rs' log lists them, as a plain Parquet scan (`read_table`, as the Spark jobs read)."""
    return read_table(spark, tables.lake, DATASETS[DELTA_RS], day)


WRITES: dict[str, Callable[[Tables, DataFrame, date], None]] = {
    PLAIN: plain_write, DELTA_SPARK: delta_spark_write, DELTA_RS: delta_rs_write}
READS: dict[str, Callable[[SparkSession, Tables, date], DataFrame]] = {
    PLAIN: plain_read, DELTA_SPARK: delta_spark_read, DELTA_RS: delta_rs_read}


def count_and_mean(frame: DataFrame) -> tuple[int, float]:
    """What a reader of the day computes: its rows and one aggregate (the mean rating), in one Spark job."""
    row = frame.agg(F.count(F.lit(1)).alias("rows"), F.avg("rating").alias("mean")).collect()[0]
    return row["rows"], row["mean"]


def timed(action: Callable[[], object]) -> tuple[float, object]:
    """Seconds one call takes, and what it returned."""
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def rows_per_day(counted: dict[str, int]) -> dict[str, int]:
    """Day → rows, sorted by day."""
    return dict(sorted(counted.items()))


def interop_check(spark: SparkSession, tables: Tables, rows: int) -> dict:
    """Each engine reads the other's table: delta-spark the delta-rs-committed table, delta-rs the delta-spark one;
    each must give exactly the day's rows, and the other days' rows as written."""
    expected = rows_per_day({DAY.isoformat(): rows, **{day.isoformat(): n for day, n in OTHER_DAYS.items()}})
    by_spark = spark.read.format("delta").load(tables.spark_uri(DELTA_RS)).groupBy("dt").count().collect()
    spark_counts = rows_per_day({row["dt"]: row["count"] for row in by_spark})
    rs_counts = rows_per_day({day.isoformat(): read_partition(tables.lake, DATASETS[DELTA_SPARK], day, ["dt"]).num_rows
                              for day in [DAY, *OTHER_DAYS]})
    return {"expected_rows_per_day": expected, "delta_spark_reads_delta_rs_table": spark_counts,
            "delta_rs_reads_delta_spark_table": rs_counts,
            "held": spark_counts == expected and rs_counts == expected}


def seconds_cell(value: float | None) -> str:
    """A duration for the table, or a dash when it was not measured."""
    return "–" if value is None else f"{value:.3f}"


def ratio_cell(value: float | None, limit: float | None) -> str:
    """`value` as a multiple of the limit's, or a dash."""
    return "–" if value is None or not limit else f"{value / limit:.2f}×"


def parse_options(argv: list[str] | None) -> argparse.Namespace:
    """The benchmark's arguments (`--quick` overrides `--rows` and `--repeat`)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the day (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="rounds after the cold one (%(default)s); the best of them is the warm figure")
    parser.add_argument("--quick", action="store_true",
                        help="200 rows, one warm round after the cold one, no session-start children: a smoke run")
    options = parser.parse_args(argv)
    if options.quick:
        options.rows, options.repeat = 200, 1
    if options.rows < 1 or options.repeat < 1:
        parser.error("--rows and --repeat must be at least 1")
    return options


def main(argv: list[str] | None = None) -> dict:
    """Start the session, run the cold round, write the other days, run the warm rounds (interleaved), check interop,
    print the table and the JSON line."""
    options = parse_options(argv)
    load_before = os.getloadavg()[0]
    starts = ({"without_delta_s": session_start_seconds(False), "with_delta_s": session_start_seconds(True)}
              if not options.quick else {"without_delta_s": None, "with_delta_s": None})
    spark = start_session(with_delta=True)
    writes: dict[str, list[float]] = {way: [] for way in WAYS}
    reads: dict[str, list[float]] = {way: [] for way in WAYS}
    with work_directory(None, "lakeloop-spark-delta-") as workdir:
        tables = Tables(Lake.from_url(str(workdir / "lake")))
        day_rows = curated_rows(spark, options.rows, DAY)
        for round_index in range(options.repeat + 1):
            for way in WAYS if round_index == 0 else round_order(WAYS, round_index - 1):
                writes[way].append(timed(lambda way=way: WRITES[way](tables, day_rows, DAY))[0])
                seconds, (counted, _) = timed(lambda way=way: count_and_mean(READS[way](spark, tables, DAY)))
                reads[way].append(seconds)
                if counted != options.rows:
                    raise AssertionError(f"{way} read {counted} rows of the day back, not {options.rows}")
            if round_index == 0:  # the other days, written once each way, must survive every rewrite of the day
                for day, rows in OTHER_DAYS.items():
                    other_rows = curated_rows(spark, rows, day)
                    for way in WAYS:
                        WRITES[way](tables, other_rows, day)
                    other_rows.unpersist()
        interop = interop_check(spark, tables, options.rows)
    spark.stop()
    summary = report(options, writes, reads, starts, interop, [load_before, os.getloadavg()[0]])
    print_json_line(summary)
    return summary


def report(options: argparse.Namespace, writes: dict[str, list[float]], reads: dict[str, list[float]],
           starts: dict[str, float | None], interop: dict, load: list[float]) -> dict:
    """Print the table and the interop check; return the headline figures."""
    cold_write = {way: seconds[0] for way, seconds in writes.items()}
    cold_read = {way: seconds[0] for way, seconds in reads.items()}
    warm_write = {way: min(seconds[1:]) for way, seconds in writes.items()}
    warm_read = {way: min(seconds[1:]) for way, seconds in reads.items()}
    print(f"{options.rows:,} rows in the day, one cold round then the best of {options.repeat} warm rounds "
          f"(interleaved); local[2], load average {load[0]:.2f} before, {load[1]:.2f} after\n")
    print("\n".join(markdown_table(
        ["way", "cold write s", "warm write s", "write vs plain", "commit overhead ms", "cold read s", "warm read s",
         "read vs plain"],
        ([way, seconds_cell(cold_write[way]), seconds_cell(warm_write[way]), ratio_cell(warm_write[way],
                                                                                     warm_write[PLAIN]),
          f"{(warm_write[way] - warm_write[PLAIN]) * 1000:.0f}", seconds_cell(cold_read[way]),
          seconds_cell(warm_read[way]), ratio_cell(warm_read[way], warm_read[PLAIN])] for way in WAYS), "lrrrrrrr")))
    print(f"\nsession start and first job: {seconds_cell(starts['without_delta_s'])} s without delta-spark, "
          f"{seconds_cell(starts['with_delta_s'])} s with it")
    print(f"interop: delta-spark reads the delta-rs table {interop['delta_spark_reads_delta_rs_table']}, "
          f"delta-rs reads the delta-spark table {interop['delta_rs_reads_delta_spark_table']}, expected "
          f"{interop['expected_rows_per_day']}: {'held' if interop['held'] else 'FAILED'}")
    keys = {PLAIN: "plain", DELTA_SPARK: "delta_spark", DELTA_RS: "delta_rs"}
    summary: dict = {"rows": options.rows, "repeat": options.repeat, "load_average": load,
                     "session_start": starts, "interop": interop}
    for way, key in keys.items():
        summary.update({f"{key}_cold_write_s": cold_write[way], f"{key}_write_s": warm_write[way],
                        f"{key}_cold_read_s": cold_read[way], f"{key}_read_s": warm_read[way]})
    summary["delta_spark_vs_delta_rs_write"] = warm_write[DELTA_SPARK] / warm_write[DELTA_RS]
    summary["delta_spark_vs_delta_rs_read"] = warm_read[DELTA_SPARK] / warm_read[DELTA_RS]
    return summary


if __name__ == "__main__":
    main()
