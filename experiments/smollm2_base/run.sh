#!/usr/bin/env bash
# Where SmolLM2-135M-Instruct (8192-token window; weights dequantised from 4-bit GGUF Q4_1) breaks, training-free,
# with RoPE presets none / dynamic NTK / YaRN. Every number in RESULTS.md comes from these longrecipe-eval runs.
# Launch (repo root, venv active or PATH=.venv/bin:$PATH):  bash experiments/smollm2_base/run.sh
# About 1 hour on 2 idle CPU cores; finished runs are skipped (results.json present), so it resumes where it stopped.
# Then: python experiments/smollm2_base/summarize.py   (writes the tables of RESULTS.md from the runs)
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
NLTK="${NLTK_DATA:-$(cd .. && pwd)/shared/nltk_data}"
CORPUS="$NLTK/corpora/state_union"
[ -d "$CORPUS" ] || { echo "state_union not found at $CORPUS: set NLTK_DATA to a folder with corpora/state_union" >&2; exit 2; }
OUT=experiments/smollm2_base/runs
MODEL=packaged:smollm2_135m_instruct
declare -A ROPE=(
  [none]=""
  [dynamic_ntk]="rope_parameters={rope_type:dynamic,factor:2.0}"
  [yarn]="rope_parameters={rope_type:yarn,factor:2.0,original_max_position_embeddings:8192} max_position_embeddings=16384"
)
run() {  # name, args...
  local name=$1; shift
  if [ -f "$OUT/$name/results.json" ]; then echo "skip $name (done)"; return; fi
  echo "== $name"; local t0=$SECONDS
  longrecipe-eval model_path=$MODEL output_dir="$OUT/$name" overwrite=true progress=false "$@"
  echo "== $name took $((SECONDS - t0)) s"
}
for rope in none dynamic_ntk yarn; do
  # perplexity by length and position bucket, joined state_union text, 2 windows per length
  run "ppl-$rope" eval=ppl eval.source="$CORPUS" 'eval.lengths=[1024,2048,4096,8192,12288,16384]' \
      eval.num_windows=2 eval.num_buckets=8 ${ROPE[$rope]}
done
# NIAH lengths per preset: dynamic NTK is the identity up to 8,192 tokens (its 4k / 8k prompts are none's), so only
# 16k is run for it; YaRN rescales every position, so 8k (inside the window) and 16k
declare -A NIAH_LENGTHS=([none]="[4096,8192,16384]" [dynamic_ntk]="[16384]" [yarn]="[8192,16384]")
for rope in none dynamic_ntk yarn; do
  # NIAH single (essay haystack = state_union) and multikey, inside and beyond the window, chat template on
  run "niah-$rope" eval=ruler 'eval.tasks=[niah_single_2,niah_multikey_1]' eval.aggregate=null \
      eval.essay_source="$CORPUS" "eval.lengths=${NIAH_LENGTHS[$rope]}" eval.num_samples=3 eval.heatmap=false \
      chat_template=true ${ROPE[$rope]}
done
