"""Constructor checks of SoftUpdateDQN: bad values fail at once with the parameter, its value and its range.

SB3 accepts e.g. ``tau=1.5`` or ``train_freq=0`` silently (the latter then hangs); a learner deserves a sentence.
"""

from typing import Any

import numpy as np
from stable_baselines3.common.type_aliases import Schedule
from torch.nn import functional as F

LOSSES = {"mse": F.mse_loss, "huber": F.smooth_l1_loss}
EXPLORATION_SCHEDULES = ("episodic", "linear")


def check_hyperparameters(
    *,
    tau: float,
    target_update_interval: int,
    exploration_schedule: str,
    exploration_decay: float,
    exploration_fraction: float,
    exploration_initial_eps: float,
    exploration_final_eps: float,
    loss: str,
    max_grad_norm: float | None,
    learning_rate: float | Schedule,
    buffer_size: int,
    learning_starts: int,
    batch_size: int,
    gamma: float,
    train_freq: int | tuple[int, str],
    gradient_steps: int,
    n_steps: int,
    switches: dict[str, Any],
    policy_kwargs: dict[str, Any] | None,
) -> None:
    """Raise a ValueError that names the parameter and its allowed range.

    ``switches`` maps the name of each on/off option to its value: only ``True``/``False`` are accepted, since
    the string ``"False"`` is truthy and would silently switch the option on.
    """

    def fail(name: str, value: Any, allowed: str) -> None:
        raise ValueError(f"SoftUpdateDQN: {name}={value!r} is invalid; {name} must be {allowed}.")

    if not 0 < tau <= 1:
        fail("tau", tau, "in (0, 1] (1e-3 in the lab; 1 means a hard copy)")
    if not _is_integer(target_update_interval) or target_update_interval < 1:
        fail("target_update_interval", target_update_interval, "an integer >= 1 (the lab's C = 4)")
    if exploration_schedule not in EXPLORATION_SCHEDULES:
        fail("exploration_schedule", exploration_schedule, f"one of {EXPLORATION_SCHEDULES}")
    if not 0 < exploration_decay <= 1:
        fail("exploration_decay", exploration_decay, "in (0, 1] (0.995 in the lab)")
    if not 0 <= exploration_fraction <= 1:
        fail("exploration_fraction", exploration_fraction, "in [0, 1]")
    for name, eps in (
        ("exploration_initial_eps", exploration_initial_eps),
        ("exploration_final_eps", exploration_final_eps),
    ):
        if not 0 <= eps <= 1:
            fail(name, eps, "in [0, 1]")
    if exploration_final_eps > exploration_initial_eps:
        fail(
            "exploration_final_eps",
            exploration_final_eps,
            f"<= exploration_initial_eps ({exploration_initial_eps})",
        )
    if loss not in LOSSES:
        fail("loss", loss, f"one of {tuple(LOSSES)}")
    if max_grad_norm is not None and not max_grad_norm > 0:
        fail("max_grad_norm", max_grad_norm, "None (no clipping, the lab) or > 0")
    if not callable(learning_rate) and not (_is_number(learning_rate) and learning_rate > 0):
        fail("learning_rate", learning_rate, "> 0 or a schedule (1e-3 in the lab)")
    for name, value, minimum, lab in (
        ("buffer_size", buffer_size, 1, "100,000"),
        ("learning_starts", learning_starts, 0, "64"),
        ("batch_size", batch_size, 1, "64"),
        ("gradient_steps", gradient_steps, -1, "1; -1 means as many as env steps collected"),
        ("n_steps", n_steps, 1, "1"),
    ):
        if not _is_integer(value) or value < minimum:
            fail(name, value, f"an integer >= {minimum} (the lab: {lab})")
    if not (_is_number(gamma) and 0 <= gamma <= 1):
        fail("gamma", gamma, "in [0, 1] (0.995 in the lab)")
    if _is_integer(buffer_size) and _is_integer(batch_size) and buffer_size < batch_size:
        fail("buffer_size", buffer_size, f">= batch_size ({batch_size}): a minibatch is drawn from the memory")
    for name, value in switches.items():
        if not isinstance(value, (bool, np.bool_)):
            fail(name, value, "True or False")
    net_arch = (policy_kwargs or {}).get("net_arch")
    if net_arch is not None and not (
        isinstance(net_arch, (list, tuple)) and all(_is_integer(width) and width >= 1 for width in net_arch)
    ):
        fail("policy_kwargs['net_arch']", net_arch, "a list of layer widths, each an integer >= 1 (the lab: [64, 64])")
    is_pair = isinstance(train_freq, (tuple, list)) and len(train_freq) == 2
    frequency, unit = train_freq if is_pair else (train_freq, "step")
    if not _is_integer(frequency) or frequency < 1 or unit not in ("step", "episode"):
        fail("train_freq", train_freq, 'an integer >= 1 or a pair (n >= 1, "step" or "episode") (the lab: 4)')


def _is_integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
