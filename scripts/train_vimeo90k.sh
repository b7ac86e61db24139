#!/usr/bin/env bash
# EDVR-L on Vimeo-90K, the whole recipe:
#   bash scripts/train_vimeo90k.sh VIMEO_SEPTUPLET_ROOT NUM_GPUS [--vid4 VID4_ROOT] [--lmdb] [--dry-run]
set -euo pipefail
if [[ $# -lt 2 ]]; then echo "usage: $0 VIMEO_SEPTUPLET_ROOT NUM_GPUS [options of scripts/train_recipe.py]" >&2; exit 2; fi
root=$1; gpus=$2; shift 2
cd "$(dirname "$0")/.."
exec python scripts/train_recipe.py vimeo90k "$root" --gpus "$gpus" "$@"
