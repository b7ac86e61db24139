#!/usr/bin/env bash
# EDVR on REDS, the whole recipe: bash scripts/train_reds.sh REDS_ROOT NUM_GPUS [--model L] [--lmdb] [--dry-run]
set -euo pipefail
if [[ $# -lt 2 ]]; then echo "usage: $0 REDS_ROOT NUM_GPUS [options of scripts/train_recipe.py]" >&2; exit 2; fi
root=$1; gpus=$2; shift 2
cd "$(dirname "$0")/.."
exec python scripts/train_recipe.py reds "$root" --gpus "$gpus" "$@"
