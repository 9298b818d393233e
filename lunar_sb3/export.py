"""Export a lander's greedy policy as standalone ONNX and TorchScript files.

``python -m lunar_sb3.export RUN --onnx lander.onnx --torchscript lander.pt``
(RUN: a model zip, an rl-zoo3 run folder, or ``-f logs [--exp-id N]`` as ``lunar_sb3.evaluate`` takes them)

A Q-learning agent acts by argmax over its Q-values, so the policy is the Q-network and one argmax: the exported
graph maps a batch of raw observations ``obs`` (float32, [batch, 8] for LunarLander) to ``q_values`` ([batch, 4])
and the greedy ``action`` (int64, [batch]). Everything the model does before its network is inside the graph: a
dueling network's Q = V + A − mean A, and a ``VecNormalize``-d run's observation normalisation with its saved
statistics. The files need neither Stable-Baselines3 nor lunar_sb3: ONNX Runtime (any language it has bindings for)
or ``torch.jit.load``.
"""

from __future__ import annotations

import copy
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecNormalize
from torch import nn

from lunar_sb3.envs import LAB_ENV_ID
from lunar_sb3.evaluation import find_vec_normalize, load_model, load_vec_normalize
from lunar_sb3.landing_eval import BEST_MODEL_FILE
from lunar_sb3.outputs import (
    OneLineArgumentParser,
    OutputError,
    atomic_path,
    check_writable_file,
    env_id_of_run,
    find_run_folder,
    model_of_run,
)
from lunar_sb3.soft_dqn.model_file import SOFT_DQN as ZOO_ALGO

INPUT_NAME = "obs"
OUTPUT_NAMES = ("q_values", "action")
LUNAR_LANDER_ACTIONS = "0: do nothing, 1: fire left engine, 2: fire main engine, 3: fire right engine"


class GreedyPolicy(nn.Module):
    """Raw observations → (Q-values, greedy action): a copy of the model's Q-network with what precedes it.

    ``VecNormalize`` statistics, when given, are applied as ``VecNormalize.normalize_obs`` does:
    clip((obs − mean) / sqrt(var + ε), −clip_obs, clip_obs), in float32 here (float64 in NumPy there).
    """

    def __init__(self, model: BaseAlgorithm, vec_normalize: VecNormalize | None = None) -> None:
        super().__init__()
        self.q_net = copy.deepcopy(model.q_net).cpu().eval()  # QNetwork or DuelingQNetwork: forward gives Q(s, ·)
        self.normalize = vec_normalize is not None and vec_normalize.norm_obs
        if self.normalize:
            rms = vec_normalize.obs_rms  # type: ignore[union-attr]
            self.register_buffer("obs_mean", torch.as_tensor(rms.mean, dtype=torch.float32))
            self.register_buffer(
                "obs_std", torch.as_tensor(np.sqrt(rms.var + vec_normalize.epsilon), dtype=torch.float32)
            )  # type: ignore[union-attr]
            self.clip_obs = float(vec_normalize.clip_obs)  # type: ignore[union-attr]

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.normalize:
            obs = torch.clamp((obs - self.obs_mean) / self.obs_std, -self.clip_obs, self.clip_obs)
        q_values = self.q_net(obs)
        return q_values, q_values.argmax(dim=1)  # the greedy action: DQNPolicy._predict's argmax


def example_observations(model: BaseAlgorithm, batch: int = 2) -> torch.Tensor:
    """A batch of observations of the model's shape, to trace the graph with."""
    shape = model.observation_space.shape
    if shape is None or len(shape) != 1:
        raise ValueError(
            f"export takes models of flat (vector) observations, this one's space is {model.observation_space}"
        )
    return torch.zeros((batch, *shape), dtype=torch.float32)


def export_torchscript(policy: GreedyPolicy, example: torch.Tensor, path: str | Path) -> Path:
    """A traced TorchScript file (``torch.jit.load(path)(obs)``). The graph has no data-dependent control flow,
    so tracing records all of it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.10 calls TorchScript deprecated; it works
        with torch.no_grad():
            traced = torch.jit.trace(policy, example)
        with atomic_path(path) as temporary:
            torch.jit.save(traced, str(temporary))
    return Path(path)


def export_onnx(policy: GreedyPolicy, example: torch.Tensor, path: str | Path, metadata: dict[str, str]) -> Path:
    """One self-contained ONNX file (no external weights file) with a dynamic batch size and ``metadata``."""
    try:
        import onnx
    except ImportError as error:
        raise OutputError(f"ONNX export needs the export extra, pip install -e '.[export]' ({error})") from None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on deprecated helpers
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # and on the torchvision ops it skips (not installed)
        try:
            program = torch.onnx.export(
                policy,
                (example,),
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_shapes={"obs": {0: torch.export.Dim("batch")}},
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        except ImportError as error:  # torch's exporter imports onnxscript only now
            raise OutputError(f"ONNX export needs the export extra, pip install -e '.[export]' ({error})") from None
    proto = program.model_proto
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto)
    with atomic_path(path) as temporary:
        onnx.save_model(proto, str(temporary))
    return Path(path)


def _model_path(args) -> tuple[Path, str]:  # type: ignore[no-untyped-def]
    """The model zip and env id named by MODEL/RUN or ``-f/--algo/--exp-id``."""
    best = args.load_best
    if args.folder is not None:
        if args.model is not None:
            raise OutputError(f"pass either RUN ({args.model}) or -f LOG_FOLDER, not both")
        env_id = args.env or LAB_ENV_ID

        def usable(folder: Path, env: str) -> bool:
            return (folder / BEST_MODEL_FILE).is_file() if best else model_of_run(folder, env).is_file()

        run = find_run_folder(args.folder, args.algo or ZOO_ALGO, env_id, args.exp_id or 0, usable, "a saved model")
    elif args.model is None:
        raise OutputError("nothing to export: pass a model zip, an rl-zoo3 run folder, or -f LOG_FOLDER")
    elif Path(args.model).is_dir():
        run = Path(args.model)
        env_id = args.env or env_id_of_run(run) or LAB_ENV_ID
    else:
        path = Path(args.model)
        if not path.is_file():
            raise OutputError(f"no such model file: {path}")
        return path, args.env or LAB_ENV_ID
    path = run / BEST_MODEL_FILE if best else model_of_run(run, env_id)
    if not path.is_file():
        raise OutputError(f"run folder {run} holds no model {path.name}")
    return path, env_id


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m lunar_sb3.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", metavar="RUN", help="model zip or rl-zoo3 run folder")
    parser.add_argument("--onnx", type=Path, metavar="PATH", help="write the policy as ONNX (e.g. lander.onnx)")
    parser.add_argument("--torchscript", type=Path, metavar="PATH", help="write it as TorchScript (e.g. lander.pt)")
    parser.add_argument("--env", help=f"env id (default: the run folder's, else {LAB_ENV_ID})")
    parser.add_argument("--load-best", action="store_true", help=f"export a run's {BEST_MODEL_FILE}")
    parser.add_argument(
        "--vecnormalize", type=Path, metavar="PKL", help="statistics to bake in (default: the run's, if it has one)"
    )
    zoo = parser.add_argument_group("an rl-zoo3 run chosen like rl_zoo3.enjoy does (instead of RUN)")
    zoo.add_argument("-f", "--folder", type=Path, help="rl-zoo3 log folder, e.g. logs")
    zoo.add_argument("--algo", help=f"algorithm folder under the log folder (default: {ZOO_ALGO})")
    zoo.add_argument("--exp-id", type=int, help="N of the run folder <ENV_ID>_N (default: 0, the latest)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=r".*LunarLander-v2 is out of date", category=DeprecationWarning)
    torch.set_num_threads(1)

    def fail(message: str) -> SystemExit:
        return SystemExit(f"{parser.prog}: error: {' '.join(str(message).split())}")

    if args.onnx is None and args.torchscript is None:
        raise fail("nothing to write: pass --onnx PATH and/or --torchscript PATH")
    if args.folder is None and (args.algo is not None or args.exp_id is not None):
        raise fail("--algo and --exp-id choose a run under a log folder: pass -f LOG_FOLDER too")
    if args.vecnormalize is not None and not args.vecnormalize.is_file():
        raise fail(f"no such VecNormalize file: {args.vecnormalize}")
    try:
        path, env_id = _model_path(args)
        for output in (args.onnx, args.torchscript):
            if output is not None:
                check_writable_file(output)
        model = load_model(path)
        stats = args.vecnormalize or find_vec_normalize(path, env_id)
        vec_normalize = None if stats is None else load_vec_normalize(stats, env_id)
        policy = GreedyPolicy(model, vec_normalize)
        example = example_observations(model)
        metadata = {
            "env_id": env_id,
            "source_model": path.name,
            "model_class": type(model).__name__,
            "inputs": f"{INPUT_NAME}: float32 [batch, {example.shape[1]}], raw observations",
            "outputs": "q_values: float32 [batch, n_actions]; action: int64 [batch], the greedy action",
            "observation_normalization": "in the graph" if policy.normalize else "none",
        }
        if env_id.startswith("LunarLander"):
            metadata["actions"] = LUNAR_LANDER_ACTIONS
        if args.onnx is not None:
            export_onnx(policy, example, args.onnx, metadata)
            print(f"wrote {args.onnx}")
        if args.torchscript is not None:
            export_torchscript(policy, example, args.torchscript)
            print(f"wrote {args.torchscript}")
    except (OutputError, ValueError, OSError) as error:
        raise fail(str(error)) from None
    shown = f", observations normalized with {stats} inside the graph" if stats is not None else ""
    print(f"exported the greedy policy of {path} ({type(model).__name__}){shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
