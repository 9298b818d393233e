"""rl-zoo3 glue: ``soft_dqn`` in ``ALGOS``, its Optuna search space, and its packaged hyperparameter file.

Importing this package registers everything (idempotently), so ``--gym-packages lunar_sb3.zoo`` or
``import lunar_sb3.zoo`` works even with the start-up hook turned off (``LUNAR_SB3_AUTOLOAD=0``).
"""

import rl_zoo3.hyperparams_opt
import rl_zoo3.utils

from lunar_sb3.presets import ALGO_NAME, hyperparams_path
from lunar_sb3.private_api import check_required
from lunar_sb3.soft_dqn import SoftUpdateDQN
from lunar_sb3.zoo.errors import install_excepthook
from lunar_sb3.zoo.experiment import install_patches
from lunar_sb3.zoo.hyperparams import (
    convert_soft_dqn_params,
    known_hyperparameters,
    sample_soft_dqn_params,
)
from lunar_sb3.zoo.push_to_hub import provide_generate_metadata

__all__ = [
    "ALGO_NAME",
    "convert_soft_dqn_params",
    "hyperparams_path",
    "known_hyperparameters",
    "provide_generate_metadata",
    "register",
    "sample_soft_dqn_params",
]


def register() -> None:
    """Make rl-zoo3 know ``soft_dqn`` (idempotent); an rl-zoo3 without what the glue wraps is refused in one line."""
    check_required("rl_zoo3")
    check_required("stable_baselines3")
    rl_zoo3.utils.ALGOS[ALGO_NAME] = SoftUpdateDQN
    rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER[ALGO_NAME] = sample_soft_dqn_params
    rl_zoo3.hyperparams_opt.HYPERPARAMS_CONVERTER[ALGO_NAME] = convert_soft_dqn_params
    install_patches()
    install_excepthook()
    provide_generate_metadata()


register()
