#!/usr/bin/env bash
# Stylize the bundled sample with one of the 26 built-in styles (pip install 'v2v[style]').
# First a sheet of all 26 styles on one frame of the clip, to choose from; then the whole clip in style 6,
# steady from frame to frame (temporal on, the default), and frame by frame to compare.
#   bash samples/stylize_sample.sh [STYLE]
set -euo pipefail
cd "$(dirname "$0")"
style="${1:-6}"
[ -f sample.mp4 ] || python make_sample.py sample.mp4
v2v preview sample.mp4 --frames 1 -o sample.styles.png --overwrite stylize --style all
v2v stylize sample.mp4 -o "sample.style$style.mp4" --style "$style" --overwrite
v2v stylize sample.mp4 -o "sample.style$style.per-frame.mp4" --style "$style" --temporal off --overwrite
v2v compare "sample.style$style.per-frame.mp4" "sample.style$style.mp4" -o "sample.style$style.compare.mp4" \
  --labels "frame by frame,temporal on" --overwrite
