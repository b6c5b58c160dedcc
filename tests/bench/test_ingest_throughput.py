"""The ingestion benchmark runs end to end at a tiny size on the real broker and prints what the README quotes."""

from __future__ import annotations

import json
import re

import pytest

from bench import ingest_throughput as bench


@pytest.mark.slow
def test_benchmark_compares_the_three_paths_and_probes_fetch_sizes_and_memory(kafka_broker, capsys):
    bench.main(["--events", "2000", "--repeat", "2", "--partitions", "2", "--rss-sizes", "1000,3000",
                "--rss-repeat", "1", "--bootstrap", kafka_broker.bootstrap])
    out = capsys.readouterr().out

    rows = dict(re.findall(r"^\| (raw kafka-python consume|lakeloop ingest \(end to end\)|naive json\.loads "
                           r"\+ pandas) .*\| +([0-9.]+)x \|$", out, re.MULTILINE))
    assert set(rows) == {name for name, _ in bench.VARIANTS} and rows["raw kafka-python consume"] == "1.00"
    assert re.search(r"^lakeloop ingest vs raw consume: best [0-9.]+x, per round [0-9.]+x, [0-9.]+x \(median "
                     r"[0-9.]+x\); target >= 0.8x: (met|NOT met|inconclusive \(the rounds disagree\))$", out,
                     re.MULTILINE)
    probe_table = out.split("\nFetch probe")[1].split("\nPeak RSS")[0]
    probe = re.findall(r"^\| +([0-9,]+) \| +([0-9,]+) \| +([0-9,]+) \| +([0-9,]+) \| +([0-9,]+) \|$", probe_table,
                       re.MULTILINE)
    assert len(probe) == 3 and all(int(row[2].replace(",", "")) > 0 for row in probe)
    rss = re.search(r"^\| +3,000 \| +(\d+) \| +(\d+) \| +(\d+) \| +-?\d+ \|$", out, re.MULTILINE)
    assert rss and 0 < int(rss[3]) < int(rss[2])  # the reading process's peak is part of the ingestion's
    assert re.search(r"^3,000 vs 1,000 events \(worst runs\): raw consume [0-9.]+x, lakeloop ingest [0-9.]+x "
                     r"\(target <= 1.5x: (met|NOT met)\), ingest - raw -?[0-9.]+x$", out, re.MULTILINE)
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["events"] == 2000 and figures["rss_target"] in ("met", "NOT met")
    assert figures["raw_records_per_s"] > 0 and figures["ingest_vs_raw_best"] > 0
    assert set(figures["rss_peak_mib"]) == {"1000", "3000"}
