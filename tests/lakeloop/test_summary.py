"""The end-of-run summary reads manifests, Delta commits and model artefacts from the lake, local or S3, and explains
the gate."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq

from lakeloop.config import load_settings
from lakeloop.delta import commit_partition_files, replace_partition
from lakeloop.models import EVALUATION, REGISTRATION
from lakeloop.names import PREDICTIONS
from lakeloop.services import free_port
from lakeloop.summary import holds_nothing, mlflow_run_url, print_summary, scorer_metrics, summarise

DAY = date(2026, 11, 20)
# An evaluation.json as lakeloop.evaluation writes it (trimmed), with the gate's decision.
EVALUATION_JSON = {
    "day": "2026-11-20", "eval_rows": 2000, "baseline_mean": 3.53, "baseline_rmse": 1.0679,
    "rmse": 1.0160, "mae": 0.81, "precision_at_10": 0.05, "ndcg_at_10": 0.0612,
    "bias_baseline_rmse": 1.0123, "bias_baseline_mae": 0.80, "bias_baseline_ndcg_at_10": 0.0587,
    "rmse_by_user_activity": [{"bucket": "new (0)", "rows": 3, "model": 1.1}],
    "gate": {"promote": False, "reason": "RMSE 1.0160 does not beat the bias baseline's 1.0123", "rmse": 1.016,
             "baseline_rmse": 1.0123, "champion_rmse": None, "champion_version": None, "tolerance": 0.01,
             "alias": "challenger"},
}


def test_the_summary_reads_an_s3_lake(s3_lake, capsys, monkeypatch):
    monkeypatch.setenv("LAKELOOP_MLFLOW_UI_URL", f"http://127.0.0.1:{free_port()}")
    ingested = "dt=2026-11-20/ingest-1/part-00000.parquet"  # where ingestion writes, then commits to the Delta log
    pq.write_table(pa.table({"x": [1]}), s3_lake.path("raw/ratings", ingested), filesystem=s3_lake.filesystem)
    commit_partition_files(s3_lake, "raw/ratings", DAY, [ingested],
                           {"counts": {"read": 12, "written": 10, "rejected": 2}})
    replace_partition(s3_lake, PREDICTIONS, DAY, pa.table({"x": [1]}), {"rows": 30, "users": 3})
    models = s3_lake.partition("models/fm", DAY)
    s3_lake.write_json(f"{models}/{EVALUATION}", EVALUATION_JSON)
    s3_lake.write_json(f"{models}/{REGISTRATION}", {"model_name": "fm", "version": "2", "alias": "challenger",
                                                    "run_id": "0123abcd", "champion_version": "1"})
    settings = replace(load_settings({}), lake_url=s3_lake.url, model_name="fm")

    report = summarise(settings, [DAY, date(2026, 11, 21)])

    assert report[str(DAY)]["raw"] == {"read": 12, "written": 10, "rejected": 2}
    assert report[str(DAY)]["evaluation"]["rmse"] == 1.016
    assert report[str(DAY)]["scorers"]["bias baseline"] == {"rmse": 1.0123, "ndcg_at_10": 0.0587}
    assert report[str(DAY)]["gate"]["reason"] == "RMSE 1.0160 does not beat the bias baseline's 1.0123"
    assert report[str(DAY)]["predictions"]["rows"] == 30
    assert report[str(DAY)]["predictions_path"] == f"{s3_lake.url}/predictions"
    assert report["2026-11-21"] == {"raw": {}, "evaluation": None, "scorers": {}, "gate": None,
                                    "registration": None, "mlflow_run_url": None, "predictions": None,
                                    "predictions_path": None}
    assert not holds_nothing(report)
    assert holds_nothing({"2026-11-21": report["2026-11-21"]})
    print_summary(settings, [DAY])
    assert capsys.readouterr().out.splitlines()[2:] == [
        "2026-11-20  ingested 10 (read 12, rejected 2)",
        "  scorer            RMSE  NDCG@10",
        "  model           1.0160   0.0612",
        "  bias baseline   1.0123   0.0587",
        "  global mean     1.0679        -",
        "  gate: not promoted (@challenger): RMSE 1.0160 does not beat the bias baseline's 1.0123",
        "  registered: fm v2 @challenger; champion is v1",
        "  MLflow run: 0123abcd (no MLflow UI answers: `make ui` serves one)",
        f"  predictions: {s3_lake.url}/predictions (Delta table, dt=2026-11-20: 30 rows, 3 users)",
    ]


def test_every_scorer_with_an_rmse_or_ndcg_shows_up_whatever_its_prefix():
    evaluation = {**EVALUATION_JSON, "champion_rmse": 1.0201, "champion_ndcg_at_10": 0.0600,
                  "popularity_ndcg_at_10": 0.0701, "popularity_precision_at_10": 0.07, "champion_version": "3",
                  "gate": {**EVALUATION_JSON["gate"], "rule": "ranking"}, "flag_rmse": True}
    assert scorer_metrics(evaluation) == {
        "model": {"rmse": 1.0160, "ndcg_at_10": 0.0612},
        "bias baseline": {"rmse": 1.0123, "ndcg_at_10": 0.0587},
        "champion": {"rmse": 1.0201, "ndcg_at_10": 0.0600},
        "global mean": {"rmse": 1.0679, "ndcg_at_10": None},
        "popularity": {"rmse": None, "ndcg_at_10": 0.0701},
    }


def test_no_mlflow_run_url_without_a_server_answering(monkeypatch):
    monkeypatch.setenv("LAKELOOP_MLFLOW_UI_URL", f"http://127.0.0.1:{free_port()}")
    assert mlflow_run_url("0123abcd") is None
    assert mlflow_run_url(None) is None
