"""The end-of-run summary reads manifests and model artefacts from the lake, local or S3."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq

from lakeloop.config import load_settings
from lakeloop.models import EVALUATION, REGISTRATION
from lakeloop.names import PREDICTIONS
from lakeloop.summary import holds_nothing, print_summary, summarise

DAY = date(2026, 11, 20)


def test_the_summary_reads_an_s3_lake(s3_lake, capsys):
    for dataset, manifest in (("raw/ratings", {"counts": {"read": 12, "written": 10, "rejected": 2}}),
                              (PREDICTIONS, {"rows": 30, "users": 3})):
        with s3_lake.staged_partition(dataset, DAY) as staged:
            pq.write_table(pa.table({"x": [1]}), f"{staged.directory}/part-0.parquet", filesystem=s3_lake.filesystem)
            staged.manifest.update(manifest)
    models = s3_lake.partition("models/fm", DAY)
    s3_lake.write_json(f"{models}/{EVALUATION}", {"rmse": 0.91, "baseline_rmse": 0.95})
    s3_lake.write_json(f"{models}/{REGISTRATION}", {"model_name": "fm", "version": "2", "alias": "champion"})
    settings = replace(load_settings({}), lake_url=s3_lake.url, model_name="fm")

    report = summarise(settings, [DAY, date(2026, 11, 21)])

    assert report[str(DAY)]["raw"] == {"read": 12, "written": 10, "rejected": 2}
    assert report[str(DAY)]["evaluation"]["rmse"] == 0.91
    assert report[str(DAY)]["predictions"]["rows"] == 30
    assert report[str(DAY)]["predictions_path"] == f"{s3_lake.url}/predictions/dt={DAY}"
    assert report["2026-11-21"] == {"raw": {}, "evaluation": None, "registration": None, "predictions": None,
                                    "predictions_path": None}
    assert not holds_nothing(report)
    assert holds_nothing({"2026-11-21": report["2026-11-21"]})
    print_summary(settings, [DAY])
    assert "ingested 10 (read 12, rejected 2) | eval RMSE 0.9100 (baseline 0.9500) | fm v2 @champion" in (
        capsys.readouterr().out)
