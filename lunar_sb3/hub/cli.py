"""``python -m lunar_sb3.hub package|push|pull|shipped``: share a lander through the Hugging Face Hub.

``package RUN OUT_DIR``   a zoo run folder → a Hub-ready folder with a landing model card (no network)
``push RUN --repo-id USER/NAME``   the same, uploaded with ``huggingface_hub`` (token: ``hf auth login`` or HF_TOKEN)
``pull REPO_ID_OR_DIR -f logs``   a package → ``logs/soft_dqn/<ENV>_<N>/``, where ``rl_zoo3.enjoy`` finds it
``shipped``   print the folder of the lander that ships with lunar_sb3 (``rl_zoo3.enjoy ... -f "$(...)"``)

RUN is a run folder (``logs/soft_dqn/LunarLander-v2_1``) or ``-f logs [--exp-id N]`` as ``lunar_sb3.evaluate`` takes it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import torch

from lunar_sb3.envs import LAB_ENV_ID
from lunar_sb3.hub.files import ZOO_ALGO
from lunar_sb3.hub.package import EVAL_EPISODES, EVAL_SEED, build_package
from lunar_sb3.hub.pull import check_repo_id, download_package, pull_package, shipped_agents_folder
from lunar_sb3.landing_eval import BEST_MODEL_FILE
from lunar_sb3.outputs import OneLineArgumentParser, OutputError, env_id_of_run, find_run_folder

PROG = "python -m lunar_sb3.hub"
NO_TOKEN = (
    "no Hugging Face token: log in with `hf auth login` (or `huggingface-cli login`), or set HF_TOKEN to a token "
    "with write access"
)


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--folder", type=Path, help="rl-zoo3 log folder, instead of RUN (e.g. logs)")
    parser.add_argument("--algo", help=f"algorithm folder under the log folder (default: {ZOO_ALGO})")
    parser.add_argument("--exp-id", type=int, help="N of the run folder <ENV>_N (default: 0, the latest with a model)")
    parser.add_argument("--env", help=f"env id of the run under -f (default: {LAB_ENV_ID})")
    parser.add_argument(
        "--load-best", action="store_true", help=f"share the run's {BEST_MODEL_FILE} instead of its final model"
    )
    parser.add_argument(
        "-n", "--n-episodes", type=int, default=EVAL_EPISODES, help=f"evaluation episodes (default: {EVAL_EPISODES})"
    )
    parser.add_argument(
        "--seed", type=int, default=EVAL_SEED, help=f"episode i resets with seed SEED+i (default: {EVAL_SEED})"
    )


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineArgumentParser)
    package = commands.add_parser("package", help="write a Hub-ready package of a run (no network)")
    package.add_argument("paths", nargs="+", metavar="[RUN] OUT_DIR", help="run folder (unless -f) and a new folder")
    package.add_argument("--repo-id", help="the repo the card's commands name (default: USER/NAME)")
    _add_run_arguments(package)
    push = commands.add_parser("push", help="package a run and upload it to the Hugging Face Hub")
    push.add_argument("run", nargs="?", type=Path, metavar="RUN", help="run folder (or -f LOG_FOLDER)")
    push.add_argument("--repo-id", required=True, help="USER/NAME of the model repo (created if missing)")
    push.add_argument("--out-dir", type=Path, help="keep the package here (default: a temporary folder)")
    push.add_argument("--private", action="store_true", help="create the repo as private")
    push.add_argument("-m", "--commit-message", default="Upload a soft_dqn lander with lunar_sb3")
    _add_run_arguments(push)
    pull = commands.add_parser("pull", help="place a package into rl-zoo3's folder layout")
    pull.add_argument("source", metavar="REPO_ID_OR_DIR", help="a Hub repo id USER/NAME or a package folder")
    pull.add_argument("-f", "--folder", type=Path, required=True, help="rl-zoo3 log folder, e.g. logs")
    pull.add_argument("--exp-id", type=int, default=0, help="N of the run folder <ENV>_N (default: 0, a new one)")
    pull.add_argument("--force", action="store_true", help="replace an existing run folder --exp-id N")
    pull.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="needed for a Hub repo: its model zip and YAML files are unpickled when loaded, which can run code",
    )
    commands.add_parser("shipped", help="print the folder of the lander that ships with lunar_sb3")
    return parser


def _run_folder(args: argparse.Namespace, run: Path | None) -> tuple[Path, str]:
    """The run folder and env id named by RUN or ``-f/--algo/--exp-id/--env``."""
    if args.folder is None and (args.algo is not None or args.exp_id is not None):
        raise OutputError("--algo and --exp-id choose a run under a log folder: pass -f LOG_FOLDER too")
    if args.folder is not None:
        if run is not None:
            raise OutputError(f"pass either RUN ({run}) or -f LOG_FOLDER, not both")
        env_id = args.env or LAB_ENV_ID
        best = (lambda folder, _env: (folder / BEST_MODEL_FILE).is_file()) if args.load_best else None
        kwargs = {"usable": best, "wanted": f"a {BEST_MODEL_FILE}"} if best else {}
        return find_run_folder(args.folder, args.algo or ZOO_ALGO, env_id, args.exp_id or 0, **kwargs), env_id
    if run is None:
        raise OutputError("nothing to share: pass an rl-zoo3 run folder RUN or -f LOG_FOLDER")
    if not run.is_dir():
        raise OutputError(f"no such run folder: {run}")
    env_id = env_id_of_run(run)
    if env_id is None:
        raise OutputError(f"{run} is not an rl-zoo3 run folder (named <ENV_ID>_<N>, e.g. LunarLander-v2_1)")
    if args.env is not None and args.env != env_id:
        raise OutputError(f"--env {args.env} does not match the run folder {run.name}")
    return run, env_id


def _package(args: argparse.Namespace, run_arg: Path | None, out_dir: Path) -> dict:
    if args.n_episodes < 1:
        raise OutputError(f"-n must be >= 1, got {args.n_episodes}")
    if args.seed < 0:
        raise OutputError(f"--seed must be >= 0 (gymnasium rejects negative seeds), got {args.seed}")
    run, env_id = _run_folder(args, run_arg)
    try:
        gym.spec(env_id)
    except gym.error.Error as error:
        raise OutputError(f"unknown env id {env_id!r} ({error})") from None
    results = build_package(
        run, env_id, out_dir, load_best=args.load_best, n_episodes=args.n_episodes, seed=args.seed, repo_id=args.repo_id
    )
    summary = results["summary"]
    print(
        f"wrote {out_dir}: {results['model_file']} from {run / results['source_model']}, "
        f"return {summary['return_mean']:.1f} ± {summary['return_std']:.1f}, "
        f"landed {summary['outcome_shares']['landed']:.0%}, crashed {summary['outcome_shares']['crashed']:.0%} "
        f"in {results['n_eval_episodes']} episodes"
    )
    return results


def _push(args: argparse.Namespace) -> None:
    import huggingface_hub

    check_repo_id(args.repo_id)
    token = huggingface_hub.get_token()
    if not token:
        raise OutputError(NO_TOKEN)
    with tempfile.TemporaryDirectory(prefix="lunar_sb3_hub_") as scratch:
        out_dir = args.out_dir or Path(scratch) / "package"
        _package(args, args.run, out_dir)
        api = huggingface_hub.HfApi(token=token)
        try:
            url = api.create_repo(args.repo_id, repo_type="model", exist_ok=True, private=args.private)
            api.upload_folder(
                repo_id=args.repo_id, repo_type="model", folder_path=out_dir, commit_message=args.commit_message
            )
        except Exception as error:  # HTTP errors (bad token, no rights), no network: huggingface_hub's message
            first_line = (str(error).strip().splitlines() or [""])[0]
            raise OutputError(f"upload to {args.repo_id} failed ({type(error).__name__}: {first_line})") from None
    print(f"pushed to {url}")


def _pull(args: argparse.Namespace) -> None:
    source = Path(args.source)
    if source.is_dir():
        run = pull_package(source, args.folder, args.exp_id, args.force)
    else:
        try:
            check_repo_id(args.source)
        except OutputError:
            raise OutputError(f"{args.source} is neither a package folder nor a Hub repo id user/name") from None
        if not args.trust_remote_code:
            raise OutputError(
                f"{args.source} is a Hub repo: its model zip and YAML files are unpickled when loaded, which can run "
                "code; pass --trust-remote-code if you trust its author"
            )
        with tempfile.TemporaryDirectory(prefix="lunar_sb3_hub_") as scratch:
            run = pull_package(download_package(args.source, Path(scratch)), args.folder, args.exp_id, args.force)
    algo, env_id = run.parent.name, env_id_of_run(run)
    print(f"wrote {run}; watch it with: python -m rl_zoo3.enjoy --algo {algo} --env {env_id} -f {args.folder}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # gymnasium calls the lab's id LunarLander-v2 "out of date" (it is v3's dynamics, see lunar_sb3.envs)
    warnings.filterwarnings("ignore", message=r".*LunarLander-v2 is out of date", category=DeprecationWarning)
    torch.set_num_threads(1)  # greedy play of a small MLP gains nothing from threads on a shared machine
    try:
        if args.command == "package":
            if args.folder is None and len(args.paths) != 2 or args.folder is not None and len(args.paths) != 1:
                raise OutputError("package takes RUN OUT_DIR, or -f LOG_FOLDER and OUT_DIR alone")
            run_arg = Path(args.paths[0]) if len(args.paths) == 2 else None
            _package(args, run_arg, Path(args.paths[-1]))
        elif args.command == "push":
            _push(args)
        elif args.command == "pull":
            _pull(args)
        else:
            print(shipped_agents_folder())
    except (OutputError, ValueError, OSError) as error:
        raise SystemExit(f"{PROG} {args.command}: error: {' '.join(str(error).split())}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
