"""Side-by-side evidence: SoftUpdateDQN against Stable-Baselines3's DQN on Lunar Lander.

``python -m lunar_sb3.benchmark solve``       train K seeds of each agent to the lab's "solved", evaluate, plot
``python -m lunar_sb3.benchmark throughput``  env steps per second on identical settings and envs, and the bare env
``python -m lunar_sb3.benchmark threads``     env steps/s beside a busy process: default torch threads vs one
``python -m lunar_sb3.benchmark zoo``         the same through ``python -m rl_zoo3.train``, as users run it

Runs of different agents are interleaved (seed 0 of each, then seed 1, ...) so that timing ratios are taken
under the same machine load; each run uses one torch thread.
"""

from lunar_sb3.benchmark.agents import AGENTS, LABELS, agent_kwargs
from lunar_sb3.benchmark.solve import solve_table

__all__ = ["AGENTS", "LABELS", "agent_kwargs", "solve_table"]
