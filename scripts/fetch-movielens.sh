#!/usr/bin/env bash
# Fetch MovieLens 100K into var/data/ml-100k from the recbole wheel on PyPI (GroupLens terms: never commit it).
set -euo pipefail
target="${1:-var/data/ml-100k}"
if [ -s "$target/ml-100k.inter" ] && [ -s "$target/ml-100k.item" ]; then
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
.venv/bin/python -m pip download --quiet --no-deps --disable-pip-version-check recbole==1.2.1 -d "$work" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
.venv/bin/python - "$work" "$target" <<'PY'
import pathlib, sys, zipfile
work, target = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(work.glob("recbole-*.whl"))
prefix = "recbole/dataset_example/ml-100k/"
target.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            (target / name[len(prefix):]).write_bytes(archive.read(name))
print(f"MovieLens 100K unpacked into {target}")
PY
