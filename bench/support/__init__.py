"""Pieces several benchmarks share that are not generic harness: data sets, the alternatives compared, probes, set-ups
and reports. Nothing here is a benchmark (no `main`); benchmarks (`bench/<name>.py`) import from here and from
`bench.harness`, never from each other."""
