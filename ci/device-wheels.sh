#!/usr/bin/env bash
# Download into .whl/ (git-ignored) the wheels bench/device_check.py needs on the GPU machine, which
# has its own Python 3.12 + torch 2.11 + transformers 5.x, no diffusers, no pydantic, no Ray and no
# network (docs/performance.md, "GPU check"). Each pin below says why that package travels:
#   diffusers, transformers   our pins (pyproject.toml): the code under test, not the machine's 5.x
#   huggingface_hub 0.36.2    transformers 4.57 requires huggingface-hub <1.0 at import; the machine has 1.x
#   tokenizers 0.22.2         transformers 4.57 requires tokenizers <=0.23.0 at import; the machine has 0.23.2
#   pydantic + pydantic-core  app.config (AppArgs) is pydantic; the machine has none
#     annotated-types, typing-inspection, typing_extensions   pydantic's requirements (typing_extensions >=4.16)
# Everything else they import is already there (numpy, pillow, safetensors, regex, requests, filelock,
# pyyaml, tqdm, packaging, fsspec, accelerate 1.15, which imports fine with huggingface_hub 0.36).
# --no-deps: each dependency is named above on purpose; one version of each.
set -euo pipefail
cd "$(dirname "$0")/.."

pin() {  # the exact version pyproject.toml pins, so the GPU run tests what CI tests
  sed -n "s/^ *\"$1==\([^\"]*\)\".*/\1/p" pyproject.toml | head -n 1
}

PACKAGES=(
  "diffusers==$(pin diffusers)"
  "transformers==$(pin transformers)"
  "huggingface_hub==0.36.2"
  "tokenizers==0.22.2"
  "pydantic==2.14.4"
  "pydantic-core==2.50.5"
  "annotated-types==0.8.0"
  "typing-inspection==0.4.5"
  "typing_extensions==4.16.0"
)

PYTHON="${PYTHON:-python3}"
rm -rf .whl
mkdir -p .whl
# The GPU machine: CPython 3.12 on x86-64 Linux (/work/.library/device/README.md, nvidia-h200 notes).
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .whl "${PACKAGES[@]}"
ls -l .whl
du -sh .whl
