"""A day's model directory, read and written the same way in a local lake and in an S3 lake (moto's server)."""

from __future__ import annotations

from datetime import date

import pytest

from lakeloop.models import MODEL_FILE, TRAIN_SUMMARY, ModelDirectory, model_dir

DAY = date(2026, 11, 20)


def test_a_model_directory_on_s3_is_copied_locally_and_what_is_made_there_published(s3_lake, tmp_path):
    directory = ModelDirectory.of(s3_lake, "fm", DAY)
    assert directory.url == f"{s3_lake.url}/models/fm/dt={DAY}"
    with pytest.raises(FileNotFoundError, match=f"{directory.url}/{TRAIN_SUMMARY} does not exist: run the upstream"):
        directory.read_json(TRAIN_SUMMARY)
    directory.write_json(TRAIN_SUMMARY, {"rows": 3})
    (tmp_path / MODEL_FILE).write_bytes(b"weights")
    directory.files.put(str(tmp_path / MODEL_FILE), MODEL_FILE)

    with directory.local_copy() as local:
        assert list(local.iterdir()) == []
        (local / "report").mkdir()
        (local / "report" / "report.md").write_text("# report")
        directory.publish(local, "report")
    assert not local.exists()

    with directory.local_copy(MODEL_FILE, "report") as local:
        assert (local / MODEL_FILE).read_bytes() == b"weights"
        assert (local / "report" / "report.md").read_text() == "# report"
        assert not (local / TRAIN_SUMMARY).exists()
    assert directory.read_json(TRAIN_SUMMARY) == {"rows": 3}
    assert directory.exists(MODEL_FILE) and not directory.exists("report")
    with pytest.raises(FileNotFoundError, match="plots does not exist"), directory.local_copy("plots"):
        pass


def test_on_a_local_lake_the_model_directory_is_used_in_place(lake):
    directory = ModelDirectory.of(lake, "fm", DAY)
    directory.write_json(TRAIN_SUMMARY, {"rows": 3})
    with directory.local_copy(MODEL_FILE) as local:
        assert local == model_dir(lake, "fm", DAY)
        (local / "report").mkdir()
        (local / "report" / "report.md").write_text("# report")
        directory.publish(local, "report")
    assert sorted(path.name for path in local.rglob("*")) == ["report", "report.md", TRAIN_SUMMARY]
