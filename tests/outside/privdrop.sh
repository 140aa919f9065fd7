#!/usr/bin/env bash
# The privilege-drop test (tests/security/privdrop_test.py) outside Bazel:
# inside Bazel's linux-sandbox only root is mapped into the user namespace,
# so no process can become nobody there and the test could only skip. Here,
# as root (as CI runs), it must pass; as another user it prints SKIP.
# Uses the binaries the Bazel pass of tools/test has just built.
set -euo pipefail
cd "$(dirname "$0")/../.."
bazel build //engine:postern //tools/qtool:qtool >/dev/null 2>&1 ||
  { echo "privdrop.sh: bazel build failed"; exit 1; }
export PYTHONPATH="$PWD/tests/peers"
export PYTHONDONTWRITEBYTECODE=1
exec /usr/bin/python3 tests/security/privdrop_test.py \
  "$PWD/bazel-bin/engine/postern" "$PWD/bazel-bin/tools/qtool/qtool"
