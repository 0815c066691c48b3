#!/usr/bin/env bash
# The main job on real data: set up, train a small SeMask model on the bundled CamVid sample with
# `semask train`, evaluate it on the bundled val images (mIoU table), and write overlays + prior maps.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e .
RUN=runs/demo
rm -rf "$RUN"
semask train semask_swin_nano_fpn_camvid-demo --data-root examples/camvid_sample --out "$RUN"
semask eval "$RUN" --data-root examples/camvid_sample
semask predict "$RUN" examples/camvid_sample/val --out "$RUN/predictions" --priors
echo "overlays and prior maps: $RUN/predictions"
