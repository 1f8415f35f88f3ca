#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.sh installs on the lent GPU machine, which has torch (CUDA),
# Triton and transformers but no registry access: what `import ponder.local` needs beyond them,
# pydantic and its helpers (pydantic-core, annotated-types, typing-inspection, typing-extensions),
# at the versions of requirements/test.lock, as CPython 3.12 manylinux x86_64 wheels in .whl/.
#
#   bash benchmarks/gpu_wheels.sh        # here, with access to PyPI; then carry .whl (git ignores it):
#   run(command="OUT=$OUT bash benchmarks/gpu_check.sh", carry=[".whl"])
#
# Fails if anything else lands in .whl, or if the folder is over 64 MiB (it is about 2.5 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PACKAGES="pydantic pydantic-core annotated-types typing-inspection typing-extensions"
pins=()
for p in $PACKAGES; do
  pin=$(grep -iE "^${p}==" requirements/test.lock | awk '{print $1}')
  [ -n "$pin" ] || { echo "no pin for $p in requirements/test.lock" >&2; exit 1; }
  pins+=("$pin")
done
rm -rf .whl && mkdir .whl
"$PY" -m pip download --quiet --no-deps --dest .whl --only-binary=:all: \
  --python-version 3.12 --implementation cp --abi cp312 --abi none \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  --platform any "${pins[@]}"
# exactly one wheel per package, nothing else
got=$(ls .whl | sed -E 's/-[0-9].*//' | tr '_' '-' | tr 'A-Z' 'a-z' | sort | tr '\n' ' ')
want=$(echo $PACKAGES | tr ' ' '\n' | sort | tr '\n' ' ')
[ "$got" = "$want" ] || { echo "unexpected wheels in .whl: $got (want $want)" >&2; exit 1; }
size=$(du -sb .whl | cut -f1)
[ "$size" -le $((64 * 1024 * 1024)) ] || { echo ".whl is $size bytes, over 64 MiB" >&2; exit 1; }
ls -l .whl
echo ".whl: $(ls .whl | wc -l) wheels, $size bytes"
