#!/usr/bin/env bash
# docs/why-convlstm.md: train every model.kind on the same radar data and budget, and on a synthetic
# image sequence, then score them side by side with `python -m nowcast evaluate --model A --model B ...`.
# Run from the repository root with the shared data at ../shared/data/radar. Two trainings at a time,
# one torch thread each (a 2-core machine). STEPS and CROP override the budget; the first argument
# picks a part: radar, images or all (default).
set -euo pipefail
PART=${1:-all}
STEPS=${STEPS:-400}
CROP=${CROP:-64}
OUT=${OUT:-runs/why}
RADAR=../shared/data/radar
mkdir -p "$OUT"

declare -A WIDTHS=(
  [convlstm]="--set model.hidden=[32,64] --set model.kernels=[3,3] --set model.downsample=[1,2]"
  [fc_lstm]="--set model.hidden=[256,256]"
  [cnn_lstm]="--set model.hidden=[256] --set model.conv_widths=[16,32,64]"
  [unet]="--set model.conv_widths=[32,64,128]"
)

train_pair() {  # train_pair RECIPE PREFIX EXTRA_SETS KIND KIND
  local recipe=$1 prefix=$2 extra=$3; shift 3
  for kind in "$@"; do
    # shellcheck disable=SC2086
    /usr/bin/time -f "%e s wall, %U s user, %S s system" -o "$OUT/$prefix$kind.time" \
      python -m nowcast -q train --config "$recipe" --set model.kind="$kind" --set model.name="$kind" \
      --set train.steps="$STEPS" --set data.crop="$CROP" ${WIDTHS[$kind]} $extra \
      --run-dir "$OUT/$prefix$kind" > "$OUT/$prefix$kind.log" 2>&1 &
  done
  wait
}

if [[ $PART == radar || $PART == all ]]; then
# radar: train on KNMI 2010-08-26 and MeteoSwiss 2016-07-11, score on the whole MeteoSwiss 2015-05-15 event,
# cut into CROP x CROP tiles (the flat kinds take frames of their training size only)
python -m scripts.data.tile_event "$RADAR/mch_switzerland_20150515.nc" "$OUT/tiles$CROP" --size "$CROP"
train_pair scripts/research/why_convlstm.yaml "" "" convlstm fc_lstm
train_pair scripts/research/why_convlstm.yaml "" "" cnn_lstm unet
python -m nowcast evaluate "$OUT"/tiles"$CROP"/*.nc --model "$OUT/convlstm/model.pt" --model "$OUT/fc_lstm/model.pt" \
  --model "$OUT/cnn_lstm/model.pt" --model "$OUT/unet/model.pt" --thresholds 0.5,1,5,10 --out "$OUT/eval-radar" \
  --threads 2 | tee "$OUT/eval-radar.txt"
fi

if [[ $PART == images || $PART == all ]]; then
# images: moving coloured shapes, 3 channels 0-255 (configs/images.yaml), train on one sequence, score on another
python -m scripts.data.shapes_sequence "$OUT/shapes_train.nc" --frames 240 --seed 0
python -m scripts.data.shapes_sequence "$OUT/shapes_test.nc" --frames 60 --seed 1
IMG="--set data.files=[$OUT/shapes_train.nc] --set train.batch_size=4 --set train.lr=0.002 --set train.warmup_steps=40 \
  --set train.val_every=100000 --set train.threads=1 --set train.max_val_windows=8 --set model.patch=4"
train_pair images "img-" "$IMG" convlstm fc_lstm
train_pair images "img-" "$IMG" cnn_lstm unet
python -m nowcast evaluate "$OUT/shapes_test.nc" --model "$OUT/img-convlstm/model.pt" --model "$OUT/img-fc_lstm/model.pt" \
  --model "$OUT/img-cnn_lstm/model.pt" --model "$OUT/img-unet/model.pt" --thresholds 50,150 --out "$OUT/eval-images" \
  --threads 2 | tee "$OUT/eval-images.txt"
fi
