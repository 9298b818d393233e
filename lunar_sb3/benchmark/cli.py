"""The ``python -m lunar_sb3.benchmark`` command line."""

import argparse

from lunar_sb3.benchmark import __doc__ as BENCHMARK_DOC
from lunar_sb3.benchmark.ablation import ABLATION_AGENTS, ABLATION_FILES, run_ablation
from lunar_sb3.benchmark.agents import AGENTS
from lunar_sb3.benchmark.compare import add_compare_parser, parse_results, run_compare
from lunar_sb3.benchmark.peers import add_peers_parser, check_peers_args, run_peers
from lunar_sb3.benchmark.q_average import add_q_average_parser, check_q_average_args, run_q_average
from lunar_sb3.benchmark.robust import add_robust_parser, check_robust_args, run_robust
from lunar_sb3.benchmark.solve import SOLVE_FILES, run_solve
from lunar_sb3.benchmark.speed import run_threads, run_throughput, run_zoo
from lunar_sb3.outputs import (
    OneLineArgumentParser,
    OutputError,
    check_writable_folder,
)


def main(argv: list[str] | None = None) -> None:
    parser = OneLineArgumentParser(
        prog="python -m lunar_sb3.benchmark",
        description=BENCHMARK_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    solve = commands.add_parser("solve", help="train K seeds per agent to 'solved', evaluate, plot")
    ablation = commands.add_parser(
        "ablation", help="lab defaults vs each Rainbow-lite component and all: IQM, 95 %% CIs, P(improvement)"
    )
    for training, agents in ((solve, ["soft_dqn", "sb3_dqn"]), (ablation, ABLATION_AGENTS)):
        training.add_argument("--seeds", type=int, default=5, help="seeds per agent (default 5)")
        training.add_argument("--seed0", type=int, default=0, help="first seed")
        training.add_argument("--agents", nargs="+", choices=list(AGENTS), default=agents)
        training.add_argument("--max-steps", type=int, default=1_500_000, help="step cap per run")
        training.add_argument("--eval-episodes", type=int, default=100)
        training.add_argument("--jobs", type=int, default=1, help="runs in parallel (one core each)")
        training.add_argument("--out", default="benchmark_results", help="folder for the results")
        training.add_argument("--quick", action="store_true", help="tiny budgets: checks the pipeline, proves nothing")
    throughput = commands.add_parser("throughput", help="env steps/s, SoftUpdateDQN vs SB3 DQN, same settings")
    throughput.add_argument("--steps", type=int, default=20_000, help="env steps per run (default 20000)")
    throughput.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    throughput.add_argument(
        "--agents",
        nargs="+",
        choices=list(AGENTS),
        default=["soft_dqn", "sb3_dqn"],
        help="agents side by side (default: soft_dqn sb3_dqn); ratios are to soft_dqn, which always runs",
    )
    throughput.add_argument(
        "--no-profile", dest="profile", action="store_false", help="skip the cProfile breakdown of the training step"
    )
    threads = commands.add_parser("threads", help="env steps/s beside a busy process: default vs one torch thread")
    threads.add_argument("--steps", type=int, default=3_000, help="env steps per run (default 3000)")
    threads.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    zoo = commands.add_parser("zoo", help="env steps/s through rl_zoo3.train, soft_dqn vs dqn (lab settings)")
    zoo.add_argument("--steps", type=int, default=30_000, help="env steps per run (default 30000)")
    zoo.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    add_robust_parser(commands)
    add_peers_parser(commands)
    add_q_average_parser(commands)
    add_compare_parser(commands)
    args = parser.parse_args(argv)
    command = commands.choices[args.command]  # its errors name the subcommand: "... benchmark solve: error: ..."
    if args.command in ("solve", "ablation"):
        if args.quick:
            args.seeds, args.max_steps, args.eval_episodes = min(args.seeds, 2), 2_000, 2
        for option in ("seeds", "max_steps", "eval_episodes", "jobs"):
            _require_positive(command, args, option)
        if args.seed0 < 0:
            command.error(f"--seed0 must be >= 0 (seeds are non-negative), got {args.seed0}")
        try:
            check_writable_folder(args.out, ABLATION_FILES if args.command == "ablation" else SOLVE_FILES)
        except OutputError as error:  # checked before hours of training, not after
            command.error(str(error))
        if args.command == "ablation":
            run_ablation(args)
        else:
            run_solve(args)
    elif args.command == "robust":
        check_robust_args(command, args)
        run_robust(args)
    elif args.command == "peers":
        check_peers_args(command, args)
        run_peers(args)
    elif args.command == "q-average":
        check_q_average_args(command, args)
        run_q_average(args)
    elif args.command == "compare":
        run_compare(args, parse_results(command, args.results, args.out))
    else:
        for option in ("steps", "rounds"):
            _require_positive(command, args, option)
        {"throughput": run_throughput, "threads": run_threads, "zoo": run_zoo}[args.command](args)


def _require_positive(parser: argparse.ArgumentParser, args: argparse.Namespace, option: str) -> None:
    """argparse's own one-line usage error (exit status 2) for a count that must be >= 1."""
    value = getattr(args, option)
    if value < 1:
        parser.error(f"--{option.replace('_', '-')} must be >= 1, got {value}")


if __name__ == "__main__":
    main()
