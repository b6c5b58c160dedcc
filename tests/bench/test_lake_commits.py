"""The commit benchmark runs both ways (plain Parquet, Delta) on a tiny day and reports each, on a local lake and on a
real S3 server."""

from __future__ import annotations

import pytest

from bench.lake_commits import WAYS, main


@pytest.mark.parametrize("store", ["local", "s3"])
def test_each_way_writes_and_reads_the_whole_day(store, request, capsys):
    lake = ["--lake", request.getfixturevalue("s3_lake").url] if store == "s3" else []
    summary = main(["--rows", "200", "--repeat", "2", *lake])

    assert summary["rows"] == 200
    assert all(summary[key] > 0 for key in ("plain_write_s", "plain_read_s", "delta_write_s", "delta_read_s",
                                            "delta_vs_plain_write", "delta_vs_plain_read"))
    assert not any("manifest" in key for key in summary)
    output = capsys.readouterr().out
    assert all(f"| {way} |" in output for way in WAYS)
    assert output.splitlines()[-1].startswith('{"rows": 200')
