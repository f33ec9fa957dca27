#!/usr/bin/env bash
# Runs `esmbench test` as a Slurm job array of N shards, then `esmbench merge` as a job that starts when
# every shard has succeeded. Each shard loads the model once and scores rows i with i % N == K - 1.
#
# Usage: scripts/slurm_array.sh N OUT_DIR -- ESMBENCH_TEST_ARGS...
#   e.g. scripts/slurm_array.sh 16 results/harvey -- --model esm1v.onnx --head head.json --data harvey.csv --device cuda
# Extra sbatch options (partition, GPUs, time) go in SBATCH_OPTS, e.g. SBATCH_OPTS="--partition=gpu --gres=gpu:1 --time=04:00:00".
# A shard that was cut off (time limit, preemption) is resumed by re-submitting the same array index: the
# command carries --resume when a checkpoint exists.
set -euo pipefail

if [ $# -lt 3 ] || [ "$3" != "--" ]; then
  sed -n '2,10p' "$0" >&2
  exit 2
fi
shards="$1"
out="$2"
shift 3
esmbench="${ESMBENCH:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/release/esmbench}"
mkdir -p "$out/shards" "$out/logs"

quoted_args=$(printf '%q ' "$@")
array_job=$(sbatch --parsable ${SBATCH_OPTS:-} --array=1-"$shards" --job-name=esmbench-shard \
  --output="$out/logs/shard-%a.log" --wrap="
    dir=$out/shards/\$SLURM_ARRAY_TASK_ID
    resume=''; [ -f \$dir/checkpoint.json ] && resume=--resume
    exec $esmbench test $quoted_args --shard \$SLURM_ARRAY_TASK_ID/$shards --out \$dir \$resume")

merge_job=$(sbatch --parsable --dependency=afterok:"$array_job" --job-name=esmbench-merge \
  --output="$out/logs/merge.log" --wrap="exec $esmbench merge $out/shards/* --out $out")

echo "submitted shards as job $array_job and the merge as job $merge_job; results in $out"
