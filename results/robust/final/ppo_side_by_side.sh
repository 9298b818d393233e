#!/bin/bash
# PPO (rl-zoo3's own hyperparameters) and the robust preset trained side by side through rl_zoo3.train, one core
# each, seed 100: the wall seconds of each, from the repository's .venv. Output: $OUT (default /tmp/ppo_side_by_side).
set -u
cd "$(dirname "$0")/../../.." && . .venv/bin/activate
export OMP_NUM_THREADS=1 MPLBACKEND=Agg
OUT=${OUT:-/tmp/ppo_side_by_side}
mkdir -p "$OUT"
timed() {
  local name=$1; shift
  local start; start=$(date +%s.%N)
  "$@" > "$OUT/$name.log" 2>&1
  local status=$?
  echo "$name $(echo "$(date +%s.%N) - $start" | bc) s, exit status $status" >> "$OUT/times.txt"
}
date -u >> "$OUT/times.txt"
timed ppo python -m rl_zoo3.train --algo ppo --env LunarLander-v3 --seed 100 -f "$OUT/ppo" --eval-freq -1 --num-threads 1 &
timed robust python -m rl_zoo3.train --algo soft_dqn --env LunarLander-v2 -conf hyperparams/soft_dqn_robust.yml \
  --seed 100 -f "$OUT/robust" --eval-freq -1 --num-threads 1 &
wait
date -u >> "$OUT/times.txt"
