#!/usr/bin/env bash
# The main job on the embedded model: set up, index the three sample videos, answer a text
# query and a crop query (the yellow ball of 02_cups.mp4, cut from its first frame).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
VIDEOS=../shared/data/videos
export VQSEARCH_DB="${VQSEARCH_DB:-demo-db}"
vqsearch index "$VIDEOS"/*.mp4
echo; echo '$ vqsearch query --text "coffee mug"'
vqsearch query --text "coffee mug"
python - "$VIDEOS/02_cups.mp4" <<'PY'
import sys, decord
from PIL import Image
frame = decord.VideoReader(sys.argv[1])[0].asnumpy()
Image.fromarray(frame[428:498, 366:438]).save("ball.png")
PY
echo; echo '$ vqsearch query --crop ball.png --show answer.png'
vqsearch query --crop ball.png --show answer.png
