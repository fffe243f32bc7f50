#!/bin/bash
#SBATCH --job-name=spec-aime
#SBATCH --array=1-8
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
# A spec run split over a SLURM job array: array task I runs shard I of SPECTRA_SHARDS, and all
# tasks share the vLLM servers (by default 8 runner processes, two QwQ replicas, one small-model
# server). Submit from the repository root; sbatch passes your environment on, so any setting
# below can be changed without editing this file, e.g.
#   SPECTRA_PROBLEM_ID=60-69 SPECTRA_SHARDS=4 sbatch --array=1-4 runners/slurm/spec_array.sh
# Each task writes results/spec_aime-shard-I-of-8 (the runner's default folder), or
# $SPECTRA_OUTPUT_DIR/shard-I-of-N when that is set. A task that was cancelled or failed is
# resubmitted alone and resumes its folder: sbatch --array=3 runners/slurm/spec_array.sh
# then: python -m evaluators.evaluate results/spec_aime-shard-*   (or: $SPECTRA_OUTPUT_DIR)
set -euo pipefail

python=${SPECTRA_PYTHON:-python}
dataset=${SPECTRA_DATASET:-aime}
problem_id=${SPECTRA_PROBLEM_ID:-60-89}
repeat_id=${SPECTRA_REPEAT_ID:-0-7}
big_model=${SPECTRA_BIG_MODEL:-Qwen/QwQ-32B}
big_url=${SPECTRA_BIG_URL:-http://gpu01:30000,http://gpu02:30000}  # replicas, comma-separated
small_model=${SPECTRA_SMALL_MODEL:-deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B}
small_url=${SPECTRA_SMALL_URL:-http://gpu03:30001}
# The shard count is not the array's size: a task resubmitted alone is in an array of one.
shards=${SPECTRA_SHARDS:-8}
read -ra more_flags <<<"${SPECTRA_ARGS:-}"  # further runner flags, e.g. "--token_budget 8192"

if [[ -z ${SLURM_ARRAY_TASK_ID:-} ]]; then
    echo "spec_array.sh: error: no SLURM_ARRAY_TASK_ID; submit it as a job array: sbatch --array=1-$shards runners/slurm/spec_array.sh" >&2
    exit 2
fi
shard=$SLURM_ARRAY_TASK_ID
output=()
if [[ -n ${SPECTRA_OUTPUT_DIR:-} ]]; then
    output=(--output_dir "$SPECTRA_OUTPUT_DIR/shard-$shard-of-$shards")
fi

# exec: scancel's SIGTERM reaches the runner itself, which keeps its finished records and exits.
exec "$python" -m runners.spec --dataset_name "$dataset" --problem_id "$problem_id" --repeat_id "$repeat_id" \
    --big_model "$big_model" --big_url "$big_url" --small_model "$small_model" --small_url "$small_url" \
    --shard "$shard/$shards" "${output[@]}" --no_progress --log_json "${more_flags[@]}"
