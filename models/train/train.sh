#!/usr/bin/env bash
# One command: venv + pinned requirements, train with fixed seeds (5-fold grouped CV + final model),
# export models/router.onnx + models/tokenizer.json, verify with onnxruntime, write scores.
# usage: models/train/train.sh [DATA_JSONL]   (default ../shared/data/routing/dev.jsonl from the repo root)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DATA="${1:-$ROOT/../shared/data/routing/dev.jsonl}"
VENV="${TIERFLOW_TRAIN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tierflow/router-train-venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt"
export HF_HUB_OFFLINE=1 PYTHONHASHSEED=0 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
START=$(date +%s)
# shellcheck disable=SC2086  # TRAIN_ARGS: optional extra train.py flags, e.g. "--save-oof /tmp/oof.npz"
"$VENV/bin/python" "$HERE/train.py" --data "$DATA" --out "$ROOT/models" --int8 ${TRAIN_ARGS:-}
"$VENV/bin/python" "$HERE/eval_onnx.py" --data "$DATA" --models "$ROOT/models"
"$VENV/bin/python" "$HERE/write_readme.py" "$(( $(date +%s) - START )) s"
(cd "$ROOT/models" && sha256sum router.onnx tokenizer.json)
