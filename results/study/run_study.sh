#!/usr/bin/env bash
# Two workers sharing one Optuna journal file (the README's distributed command, 2 terminals).
cd /tmp/study
for seed in 1 2; do
  /work/venv/bin/python -m rl_zoo3.train --algo soft_dqn --env LunarLander-v2 -optimize --n-trials 10 -n 150000 \
    --sampler tpe --pruner median --n-startup-trials 5 --n-evaluations 3 --eval-episodes 10 \
    --storage logs/soft_dqn_lunar.log --study-name soft_dqn_lunar -params callback:None --no-optim-plots \
    -f logs --seed $seed --num-threads 1 > worker$seed.log 2>&1 &
done
wait
