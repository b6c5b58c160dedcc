"""The `lakeloop` command: embedded services, MovieLens replay, the Airflow CLI with the project's
environment, `run` (what `make run` does: replay, run the DAG for each replayed day, summarise), and `lake`
(the Delta tables' commits, a day's rows as of a past version)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from lakeloop.config import (
    BROKER_DIR_NAME,
    DEFAULT_KAFKA_BOOTSTRAP,
    DEFAULT_KAFKA_PORT,
    BadSetting,
    ConfigurationError,
    Settings,
    load_settings,
    parse_kafka_bootstrap,
    state_dir_from,
)
from lakeloop.names import DELTA_TABLES
from lakeloop.operations import load_operations
from lakeloop.services import EmbeddedBroker

DAG_ID = "daily_retrain"
MAX_DAYS = 3650  # ten years of days: far beyond any replay or training window, far below `date`'s range
PROGRESS_POLL_SECONDS = 1.0
OUTPUT_DRAIN_SECONDS = 60.0  # for the run's last lines once `dags test` exited (a child may hold the pipe)
FAILURE_LOG_TAIL_LINES = 3000  # the end of a failed day's log searched for error lines
PREVIEW_ROWS = 5  # rows `lakeloop lake read` prints without --output
OUTPUT_FORMATS = (".parquet", ".csv")


def first_address(bootstrap: str) -> tuple[str, int]:
    """Host and port of the first `host:port` of a checked bootstrap list."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    return host or "127.0.0.1", int(port or DEFAULT_KAFKA_PORT)


def embedded_broker(settings: Settings) -> EmbeddedBroker:
    """The broker of the default set-up, serving the port named in LAKELOOP_KAFKA_BOOTSTRAP."""
    host, port = first_address(settings.kafka_bootstrap)
    settings.broker_dir.mkdir(parents=True, exist_ok=True)
    return EmbeddedBroker(state_dir=settings.broker_dir, port=port, host=host)


def broker_whatever_the_settings(environ: Mapping[str, str] | None = None) -> EmbeddedBroker:
    """The embedded broker as `services down` and `status` need it: found by the pid file in the state directory,
    with no other setting checked, so a bad one (caught by every other command) never keeps anyone from
    stopping the broker. An unusable LAKELOOP_KAFKA_BOOTSTRAP only changes the address the status line shows."""
    env = os.environ if environ is None else environ
    try:
        host, port = first_address(parse_kafka_bootstrap(env.get("LAKELOOP_KAFKA_BOOTSTRAP", DEFAULT_KAFKA_BOOTSTRAP)))
    except ValueError:
        host, port = "127.0.0.1", DEFAULT_KAFKA_PORT
    return EmbeddedBroker(state_dir=state_dir_from(env) / BROKER_DIR_NAME, port=port, host=host)


def yesterday() -> date:
    """The last complete UTC day."""
    return datetime.now(UTC).date() - timedelta(days=1)


def day_count(text: str) -> int:
    """`--days`: a whole number of days from 1 to MAX_DAYS, refused by argparse (exit 2) before any work."""
    try:
        days = int(text)
    except ValueError:
        days = 0
    if not 1 <= days <= MAX_DAYS:
        raise argparse.ArgumentTypeError(f"expected a whole number of days from 1 to {MAX_DAYS}, got {text!r}")
    return days


def table_version(text: str) -> int:
    """`--version`: a Delta table version, a whole number >= 0, refused by argparse (exit 2) otherwise."""
    try:
        version = int(text)
    except ValueError:
        version = -1
    if version < 0:
        raise argparse.ArgumentTypeError(f"expected a table version, a whole number >= 0, got {text!r}")
    return version


def output_file(text: str) -> Path:
    """`--output`: a file whose name ends in .parquet or .csv (the format written), refused by argparse otherwise."""
    path = Path(text)
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise argparse.ArgumentTypeError(f"expected a file ending in {' or '.join(OUTPUT_FORMATS)}, got {text!r}")
    return path


def cmd_services(args: argparse.Namespace, settings: Settings | None) -> int:
    if args.action == "up":
        assert settings is not None, "services up needs the checked settings"
        broker = embedded_broker(settings)
        broker.start()
    else:
        broker = broker_whatever_the_settings()
        if args.action == "down":
            broker.stop()
    print(broker.status())
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from lakeloop.movielens import load_movielens
    from lakeloop.replay import replay

    report = replay(load_movielens(args.dataset_dir or settings.dataset_dir), settings.kafka_bootstrap,
                    settings.ratings_topic, settings.lake_url, args.days, args.end_date, force=args.force)
    verb = "published" if report.published else "already in the topic (not published again):"
    print(f"{verb} {report.total} events to topic {report.topic!r}:")
    for day, count in report.events_per_day.items():
        print(f"  {day}: {count}")
    print(f"movie catalog: {report.catalog_url}")
    return 0


def cmd_catalog_import(args: argparse.Namespace, settings: Settings) -> int:
    """Replace the lake's item catalog with the user's file; a bad file is refused (exit 1) with what to fix."""
    from lakeloop.catalog import CatalogError, import_catalog

    try:
        imported = import_catalog(args.path, settings.lake_url)
    except CatalogError as error:
        print(f"lakeloop catalog import: {error}", file=sys.stderr)
        return 1
    print(imported.summary(args.path))
    return 0


def cmd_airflow(args: argparse.Namespace, settings: Settings) -> int:
    from lakeloop.airflow_env import run_airflow

    return run_airflow(args.airflow_args, settings, check=False)


def cmd_ui(args: argparse.Namespace, settings: Settings) -> int:
    from lakeloop.airflow_env import run_ui

    return run_ui(settings)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from lakeloop.lake import window_days
    from lakeloop.summary import print_summary

    days = window_days(args.end_date, args.days)
    log_dir = settings.state_dir / "logs" / f"run-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"lakeloop run: {DAG_ID} for {len(days)} day(s), {days[0]} to {days[-1]}; every task's log in {log_dir}",
          flush=True)
    broker = embedded_broker(settings)
    with contextlib.nullcontext() if args.verbose else logging_to(log_dir / "lakeloop.log"):
        started_here = broker.start()
        try:
            cmd_replay(args, settings)
            for number, day in enumerate(days, 1):
                if not run_day(day, f"--- day {number}/{len(days)}: {day} ---", settings, log_dir / f"{day}.log",
                               args.verbose):
                    if started_here:
                        broker.stop()
                    return 1
        except BaseException:
            if started_here:
                broker.stop()
            raise
    print_summary(settings, days)
    return 0


@contextlib.contextmanager
def logging_to(path: Path) -> Iterator[None]:
    """Send this process's own log messages (the broker start, the replay's Kafka client) to `path` instead of
    the terminal while the block runs."""
    root = logging.getLogger()
    previous = list(root.handlers)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for old in previous:
        root.removeHandler(old)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        for old in previous:
            root.addHandler(old)


def run_day(day: date, label: str, settings: Settings, log_path: Path, verbose: bool) -> bool:
    """Run the DAG for one day (`lakeloop airflow dags test`) with its output in `log_path`; show the tasks'
    progress (or, `verbose`, every log line); on failure print what failed and what to try. True if it succeeded."""
    from lakeloop.airflow_env import airflow_environment
    from lakeloop.progress import ProgressView, TaskStates, failure_report, metadata_db_url

    view = ProgressView(sys.stdout, live=sys.stdout.isatty() and not verbose)
    view.start_day(day, label)
    states = TaskStates(metadata_db_url(airflow_environment(settings)), DAG_ID, day, datetime.now(UTC))
    tail: deque[str] = deque(maxlen=FAILURE_LOG_TAIL_LINES)
    lock = threading.Lock()
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen([sys.executable, "-m", "lakeloop.cli", "airflow", "dags", "test", DAG_ID,
                                    day.isoformat()], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        def copy_output() -> None:
            for raw in process.stdout:
                line = raw.decode("utf-8", errors="replace")
                try:
                    log.write(line)
                except ValueError:  # closed: `dags test` exited long ago and a child still holds the pipe
                    return
                if verbose:
                    sys.stdout.write(line)
                with lock:
                    tail.append(line)
                    view.feed(line, time.monotonic())

        reader = threading.Thread(target=copy_output, name=f"log-{day}", daemon=True)
        reader.start()
        rows = []
        while process.poll() is None:
            rows = states.read() or rows
            if not verbose:
                with lock:
                    view.update(rows, datetime.now(UTC))
            time.sleep(PROGRESS_POLL_SECONDS)
        reader.join(timeout=OUTPUT_DRAIN_SECONDS)
    rows = states.read() or rows
    states.close()
    if not verbose:
        view.update(rows, datetime.now(UTC))
        view.finish()
    failed = process.returncode != 0 or any(row.state == "failed" for row in rows)
    if failed:
        print(failure_report(day, rows, log_path, list(tail)), file=sys.stderr, flush=True)
    return not failed


def cmd_summary(args: argparse.Namespace, settings: Settings) -> int:
    from lakeloop.lake import window_days
    from lakeloop.summary import holds_nothing, print_summary, summarise

    days = window_days(args.end_date, args.days)
    report = summarise(settings, days)
    if holds_nothing(report):
        print(f"lakeloop summary: the lake {settings.lake_url} holds nothing for {days[0]} to {days[-1]} (no "
              "ingested ratings, model or predictions): run `lakeloop run` first, or check LAKELOOP_LAKE_URL, "
              "--end-date and --days", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_summary(settings, days, report)
    return 0


def cmd_lake_history(args: argparse.Namespace, settings: Settings) -> int:
    """Print every commit the Delta table's log holds, newest first; exit 1 if the lake has no such table."""
    from lakeloop.delta import table_history
    from lakeloop.lake import as_lake

    history = table_history(as_lake(settings.lake_url), args.table)
    if history is None:
        print(f"lakeloop lake history: the lake {settings.lake_url} has no Delta table {args.table} yet (the task "
              "that writes it — ingest_ratings, spark_etl, spark_features or batch_predict — creates it on its "
              "first day), or LAKELOOP_LAKE_URL names another lake", file=sys.stderr)
        return 1
    print(f"{'version':>7}  {'timestamp (UTC)':<19}  {'operation':<12}  predicate")
    for commit in history:
        print(f"{commit['version']:>7}  {commit['timestamp']:%Y-%m-%d %H:%M:%S}  {commit['operation'] or '-':<12}  "
              f"{commit['predicate'] or '-'}")
    return 0


def cmd_lake_read(args: argparse.Namespace, settings: Settings) -> int:
    """Print a day's row count and first rows of a Delta table (newest, or as of --version), or write them all to
    --output; exit 1 with what to do when the version or the day cannot be read."""
    import pyarrow as pa

    from lakeloop.delta import TableVersionUnavailableError, read_partition
    from lakeloop.lake import as_lake

    which = "newest version" if args.version is None else f"version {args.version}"
    try:
        rows = read_partition(as_lake(settings.lake_url), args.table, args.day, version=args.version)
    except TableVersionUnavailableError as error:
        print(f"lakeloop lake read: {error}", file=sys.stderr)
        return 1
    if rows is None:
        print(f"lakeloop lake read: {args.table} in the lake {settings.lake_url} has no rows for {args.day} in its "
              f"{which} (or no such table): `lakeloop lake history {args.table}` lists the days its commits wrote",
              file=sys.stderr)
        return 1
    described = f"{rows.num_rows} rows of {args.table} dt={args.day} ({which})"
    if args.output is None:
        print(f"{described}; the first {min(PREVIEW_ROWS, rows.num_rows)}:")
        print(rows.slice(0, PREVIEW_ROWS).to_pandas().to_string(index=False))
        return 0
    if args.output.suffix.lower() == ".csv":
        nested = [field.name for field in rows.schema if pa.types.is_nested(field.type)]
        if nested:
            print(f"lakeloop lake read: {args.table} has list columns ({', '.join(nested)}) that a CSV file cannot "
                  "hold: write a .parquet file instead", file=sys.stderr)
            return 1
        import pyarrow.csv as csv

        csv.write_csv(rows, args.output)
    else:
        import pyarrow.parquet as pq

        pq.write_table(rows, args.output)
    print(f"{described} written to {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="lakeloop", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    services = commands.add_parser("services", help="the embedded Kafka-protocol broker")
    services.add_argument("action", choices=["up", "down", "status"])
    services.set_defaults(handler=cmd_services)

    def add_days(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--days", type=day_count, default=3, help=f"number of days, 1 to {MAX_DAYS} (default 3)")
        sub.add_argument("--end-date", type=date.fromisoformat, default=yesterday(),
                         help="last day, YYYY-MM-DD (default yesterday, UTC)")

    for name, handler, help_text in [("replay", cmd_replay, "publish MovieLens ratings as Kafka events"),
                                     ("run", cmd_run, "replay, run the DAG for each replayed day, summarise")]:
        sub = commands.add_parser(name, help=help_text)
        add_days(sub)
        sub.add_argument("--dataset-dir", help="MovieLens 100K directory (default: the one make setup fetched)")
        sub.add_argument("--force", action="store_true", help="publish even if the topic already holds those days")
        sub.set_defaults(handler=handler)
    commands.choices["run"].add_argument("--verbose", action="store_true",
                                         help="stream every task's log lines instead of the progress view")

    catalog = commands.add_parser("catalog", help="the lake's item catalog (the reference table the jobs join)")
    catalog_import = catalog.add_subparsers(dest="catalog_action", required=True).add_parser(
        "import", help="check a Parquet or CSV file (item_id, title, year, genres) and make it the lake's catalog")
    catalog_import.add_argument("path", type=Path, help="a .parquet or .csv file; a CSV's genres are written a|b|c")
    catalog_import.set_defaults(handler=cmd_catalog_import)

    lake = commands.add_parser("lake", help="the lake's Delta tables: their commits, a day's rows as of a version")
    lake_actions = lake.add_subparsers(dest="lake_action", required=True)
    lake_history = lake_actions.add_parser("history", help="every commit of a Delta table, newest first: version, "
                                                           "time, operation, predicate")
    lake_history.add_argument("table", choices=DELTA_TABLES)
    lake_history.set_defaults(handler=cmd_lake_history)
    lake_read = lake_actions.add_parser("read", help="a day's rows of a Delta table, as of its newest version or "
                                                     "--version")
    lake_read.add_argument("table", choices=DELTA_TABLES)
    lake_read.add_argument("--day", type=date.fromisoformat, required=True, help="the day (dt), YYYY-MM-DD")
    lake_read.add_argument("--version", type=table_version,
                           help="the table version to read (default: the newest; `lake history` lists them)")
    lake_read.add_argument("--output", type=output_file, metavar="FILE.parquet|FILE.csv",
                           help="write every row there instead of printing the count and the first rows")
    lake_read.set_defaults(handler=cmd_lake_read)

    ui = commands.add_parser("ui", help="airflow standalone and the MLflow UI on 127.0.0.1, until Ctrl-C")
    ui.set_defaults(handler=cmd_ui)

    summary = commands.add_parser("summary", help="what the lake and the registry hold for recent days")
    add_days(summary)
    summary.add_argument("--json", action="store_true")
    summary.set_defaults(handler=cmd_summary)

    airflow = commands.add_parser("airflow", help="the Airflow CLI with the project's environment",
                                  add_help=False)
    airflow.add_argument("airflow_args", nargs=argparse.REMAINDER)
    airflow.set_defaults(handler=cmd_airflow)
    return parser


def check_window(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse (exit 2) a `--days` window that would start before the first day a date can hold."""
    if getattr(args, "days", None) and args.end_date - date.min < timedelta(days=args.days - 1):
        parser.error(f"--days {args.days} ending {args.end_date} would start before {date.min}: "
                     "choose a later --end-date or fewer --days")


def needs_settings(args: argparse.Namespace) -> bool:
    """Whether a command needs the checked settings: all but `services down` and `services status`."""
    return not (args.command == "services" and args.action in ("down", "status"))


def checked_settings() -> Settings:
    """The settings, after checking every variable the project reads, the DAG's retry knobs too, so a bad value
    stops the command here with one message naming each bad variable, not later inside Airflow."""
    try:
        load_operations()
        operations_problems: tuple[BadSetting, ...] = ()
    except ConfigurationError as error:
        operations_problems = error.problems
    try:
        settings = load_settings()
    except ConfigurationError as error:
        raise ConfigurationError(*error.problems, *operations_problems) from None
    if operations_problems:
        raise ConfigurationError(*operations_problems)
    return settings


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `lakeloop` console script. A bad setting prints one line naming it and exits 2,
    without a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)  # kafka-python narrates every connection at INFO
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["airflow"]:
            return cmd_airflow(argparse.Namespace(airflow_args=argv[1:]), checked_settings())
        parser = build_parser()
        args = parser.parse_args(argv)
        check_window(parser, args)
        return args.handler(args, checked_settings() if needs_settings(args) else None)
    except ConfigurationError as error:
        print(f"lakeloop: configuration error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
