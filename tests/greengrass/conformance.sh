#!/usr/bin/env bash
# The Greengrass IPC emulator checked by AWS's own client: awsiotsdk (pinned) in a venv runs a
# scripted session against greengrass-emulator with the shipped recipe. Also checks that
# recipe.yaml and recipe.json say the same. Prints SKIPPED with the reason when Python's venv
# or the package index is not available; never passes silently.
set -euo pipefail
cd "$(dirname "$0")/../.."

AWSIOTSDK_VERSION=1.31.0
PYYAML_VERSION=6.0.2
target=${CARGO_TARGET_DIR:-target}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! python3 -m venv "$work/venv" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    fi
    if ! python3 -m venv "$work/venv" >/dev/null 2>&1; then
        echo "SKIPPED: Greengrass conformance: python3 -m venv is not available"
        exit 0
    fi
fi
if ! "$work/venv/bin/pip" install -q --disable-pip-version-check \
        "awsiotsdk==$AWSIOTSDK_VERSION" "pyyaml==$PYYAML_VERSION" >"$work/pip.log" 2>&1; then
    echo "SKIPPED: Greengrass conformance: cannot install awsiotsdk==$AWSIOTSDK_VERSION from the package index:"
    tail -n 3 "$work/pip.log" | sed 's/^/  /'
    exit 0
fi

"$work/venv/bin/python" - packaging/greengrass/recipe.yaml packaging/greengrass/recipe.json <<'PY'
import json, sys, yaml
a = yaml.safe_load(open(sys.argv[1]))
b = json.load(open(sys.argv[2]))
if a != b:
    sys.exit(f"{sys.argv[1]} and {sys.argv[2]} differ")
print("ok   recipe.yaml and recipe.json are the same recipe")
PY

cargo build -j2 --locked -p integration-tests --bin greengrass-emulator
"$work/venv/bin/python" tests/greengrass/official_client_check.py \
    "$target/debug/greengrass-emulator" packaging/greengrass/recipe.json "$work"
