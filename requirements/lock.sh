#!/usr/bin/env bash
# Refresh requirements/test.lock on purpose: every transitive dependency of the test install (the
# dev, llamacpp and triton extras, and llama.cpp's server) for CPython 3.11 on Linux x86_64, with
# the CPU build of torch 2.13.0. Review the diff, run the tests, commit both.
#   bash requirements/lock.sh            (needs uv: pip install uv)
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# The CPU wheel's metadata (no CUDA packages), from a folder holding
# torch-2.13.0+cpu-cp311-*.whl (/opt/wheels on this project's machines, else $PONDER_TORCH_WHEELS);
# pip reads `torch==2.13.0` in the lock as satisfied by the CPU build.
echo "torch==2.13.0+cpu" > "$tmp/torch.txt"
find_links=()
[ -d /opt/wheels ] && find_links=(--find-links /opt/wheels)
[ -n "${PONDER_TORCH_WHEELS:-}" ] && find_links=(--find-links "$PONDER_TORCH_WHEELS")
uv pip compile pyproject.toml requirements/test-extras.in \
  --extra dev --extra llamacpp --extra triton -c "$tmp/torch.txt" "${find_links[@]}" \
  --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --no-header --annotation-style line -o "$tmp/lock.txt" >/dev/null
{
  echo "# The tested set: every transitive dependency of the test install, pinned (pip constraints)."
  echo "# Used by the README's test command (pip install -c requirements/test.lock ...)."
  echo "# Refresh on purpose with: bash requirements/lock.sh"
  sed -e 's/^torch==2\.13\.0+cpu/torch==2.13.0/' -e '/^ponder\b/d' -e 's#, -c [^ ,]*torch\.txt##' "$tmp/lock.txt"
} > requirements/test.lock
echo "wrote requirements/test.lock ($(grep -c '==' requirements/test.lock) pins)"
