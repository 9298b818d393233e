"""Fast training path of SoftUpdateDQN: the whole gradient step as one compiled call, or SB3's general path.

For a 64-64 MLP and a minibatch of 64, per-operator overhead, not arithmetic, decides the cost of a gradient
step. For what the lab uses (a stack of Linear/ReLU layers, optionally with a dueling head, an MSE or Huber
loss, Adam) the whole step — gather, TD target, forward, hand-derived backward, clipping, Adam — is one call of
:func:`lunar_sb3.soft_dqn.kernel.train_steps`, and the greedy action of the rollout another. Results equal
autograd's to float32 rounding, not bit for bit (see ``docs/speed.md``). Replay is sampled with the same random
calls as the buffer's own ``sample``, so a seeded run trains on the same minibatches either way. Prioritized
replay draws from the buffer's sum tree, weights the loss by its importance-sampling weights and hands the TD
errors back to ``update_priorities``, one gradient step per call (the next draw depends on the new priorities).

The fast path is an allow-list (:func:`unsupported_reason`): it runs only for configurations it implements,
checked at every ``learn``; anything else (custom features extractors, other buffers, optimizers or optimizer
options, ``VecNormalize``, non-CPU devices, no Numba, ``LUNAR_SB3_NUMBA=0``, a kernel that failed to compile)
trains on SB3's rollout loop and autograd, and ``model.fast_path_status`` says why.
"""

import os
import time
from typing import TYPE_CHECKING

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.type_aliases import TrainFrequencyUnit
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn

from lunar_sb3.soft_dqn import jit, kernel
from lunar_sb3.soft_dqn.policies import DuelingDQNPolicy, DuelingQNetwork
from lunar_sb3.soft_dqn.prioritized import PrioritizedNStepReplayBuffer, PrioritizedReplayBuffer

if TYPE_CHECKING:
    from lunar_sb3.soft_dqn.soft_dqn import SoftUpdateDQN

# Private torch entry points used by the general path's helpers, each checked before it is relied on:
# ``Adam(fused=True)`` (SoftUpdateDQN's default optimizer on the CPU) and the one-call Polyak update
HAS_FUSED_ADAM = hasattr(th, "_fused_adam_")
HAS_FOREACH = hasattr(th, "_foreach_lerp_")

# Adam's options and the values the kernel implements (torch.optim.Adam's update with L2 weight decay); "lr",
# "betas", "eps" and "weight_decay" are passed as they are, "fused" and "foreach" only choose torch's code for
# the same update. Any other key (a newer torch's option) or value sends training to the general path.
ADAM_OPTIONS_IMPLEMENTED = {
    "amsgrad": (False,),
    "maximize": (False,),
    "capturable": (False,),
    "differentiable": (False,),
    "decoupled_weight_decay": (False,),
    "fused": (None, False, True),
    "foreach": (None, False, True),
}
ADAM_OPTIONS_PASSED = {"params", "lr", "betas", "eps", "weight_decay", "initial_lr"}

# The replay buffers whose sampling the fast path reproduces, by exact type: a subclass may sample otherwise
FAST_REPLAY_BUFFERS = (ReplayBuffer, NStepReplayBuffer, PrioritizedReplayBuffer, PrioritizedNStepReplayBuffer)
# The policies the fast path trains, by exact type, and the network class each must hold (online and target)
FAST_NETWORKS = {DQNPolicy: QNetwork, DuelingDQNPolicy: DuelingQNetwork}
# Set when compiling the kernel failed in this process (a Numba/LLVM problem): every model then falls back
compile_error: str | None = None


def lerp_all(targets: list[th.Tensor], sources: list[th.Tensor], weight: float) -> None:
    """targets ← targets + weight·(sources − targets), in one fused call when torch has it."""
    if HAS_FOREACH:
        th._foreach_lerp_(targets, sources, weight)
    else:
        for target, source in zip(targets, sources, strict=True):
            target.lerp_(source, weight)


def is_linear_relu_stack(sequential: nn.Module) -> bool:
    """Linear, ReLU, Linear, ..., Linear, every Linear with a bias: what the kernel computes."""
    layers = list(sequential) if isinstance(sequential, nn.Sequential) else []
    pattern_ok = len(layers) % 2 == 1 and all(
        type(layer) is (nn.Linear if i % 2 == 0 else nn.ReLU) for i, layer in enumerate(layers)
    )
    return pattern_ok and all(layer.bias is not None for layer in layers[::2])


def linear_parameters(sequential: nn.Module) -> list[nn.Parameter]:
    """[W0, b0, W1, b1, ...] of a Linear/ReLU stack: the layout of the kernel's flat arrays."""
    return [p for layer in sequential if isinstance(layer, nn.Linear) for p in (layer.weight, layer.bias)]


def _optimizer_reason(model: "SoftUpdateDQN") -> str | None:
    """Why the optimizer's step differs from the kernel's Adam, or None."""
    optimizer = model.policy.optimizer
    if type(optimizer) is not th.optim.Adam:
        return f"the optimizer {type(optimizer).__name__} (the fast path implements Adam)"
    if len(optimizer.param_groups) != 1:
        return "several optimizer parameter groups"
    group = optimizer.param_groups[0]
    for key, value in group.items():
        if key in ADAM_OPTIONS_PASSED:
            continue
        if key not in ADAM_OPTIONS_IMPLEMENTED or value not in ADAM_OPTIONS_IMPLEMENTED[key]:
            return f"Adam({key}={value!r})"
    if isinstance(group["lr"], th.Tensor):
        return "a tensor learning rate"
    if optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks:
        return "optimizer step hooks"
    if [id(p) for p in group["params"]] != [id(p) for p in linear_parameters(model.policy.q_net.q_net)]:
        return "an optimizer whose parameters are not exactly the Q-network's"
    return None


def _network_reason(model: "SoftUpdateDQN") -> str | None:
    """Why the Q-network or the target network is not what the kernel computes, or None.

    Both must be Linear/ReLU stacks of the policy's own network class, shaped alike, whose last layer has one
    output per action (a dueling network: one more, V).
    """
    policy = model.policy
    network_class = FAST_NETWORKS.get(type(policy))
    if network_class is None:
        return f"the policy {type(policy).__name__}"
    networks = (policy.q_net, policy.q_net_target)
    for network in networks:
        if type(network) is not network_class:
            return f"the Q-network {type(network).__name__} in a {type(policy).__name__}"
        if type(network.features_extractor) is not FlattenExtractor:
            return "a custom features extractor"
        if not is_linear_relu_stack(getattr(network, "q_net", None)):
            return "a network that is not a Linear/ReLU stack"
    online, target = ([tuple(p.shape) for p in network.parameters()] for network in networks)
    if online != target:
        return "a target network shaped unlike the Q-network"
    outputs, n_actions = online[-1][0], int(model.action_space.n)  # the last bias: one per output
    if outputs != n_actions + (network_class is DuelingQNetwork):
        return f"a last layer with {outputs} outputs for {n_actions} actions"
    return None


def unsupported_reason(model: "SoftUpdateDQN") -> str | None:
    """Why ``model`` must train on the general path, or None if the fast path implements it."""
    if not getattr(model, "use_fast_path", True):
        return "use_fast_path=False"
    numba_off = jit.disabled_reason()
    if numba_off is not None:
        return numba_off
    if compile_error is not None:
        return f"the compiled training step failed to build ({compile_error})"
    buffer, observations = model.replay_buffer, model.observation_space
    checks = [
        (model.device.type == "cpu", f"the device {model.device}"),
        (isinstance(observations, spaces.Box) and len(observations.shape) == 1, "a non-vector observation space"),
        (isinstance(model.action_space, spaces.Discrete) and model.action_space.start == 0, "a shifted action space"),
        (type(buffer) in FAST_REPLAY_BUFFERS, f"the replay buffer {type(buffer).__name__}"),
        (not model.optimize_memory_usage, "optimize_memory_usage=True"),
        (buffer.actions.ndim == 3 and buffer.actions.shape[2] == 1, "actions stored with more than one component"),
        (model._vec_normalize_env is None, "VecNormalize (the buffer is sampled through its normalisation)"),
        (model.train_freq.unit == TrainFrequencyUnit.STEP, "train_freq counted in episodes"),
        (all(p.dtype == th.float32 for p in model.policy.parameters()), "non-float32 weights"),
    ]  # fmt: skip
    for ok, what in checks:
        if not ok:
            return what
    return _network_reason(model) or _optimizer_reason(model)


def _flat_buffer(tensors: list[th.Tensor]) -> tuple[th.Tensor, list[th.Tensor]]:
    """A flat float32 buffer holding ``tensors`` one after the other, and the views of it shaped like them.

    If the tensors already are exactly such views (a previous binding), their buffer is returned and nothing
    moves; otherwise a new buffer gets their values and the caller must put the returned views in their place.
    """
    first = tensors[0].detach()
    total = sum(t.numel() for t in tensors)
    storage = first.untyped_storage()
    consecutive, offset = first.dtype == th.float32 and storage.nbytes() == 4 * total, 0
    for tensor in tensors:
        consecutive = (
            consecutive
            and tensor.dtype == th.float32
            and tensor.is_contiguous()
            and tensor.untyped_storage().data_ptr() == storage.data_ptr()
            and tensor.storage_offset() == offset
        )
        offset += tensor.numel()
    if consecutive:
        return first.as_strided((total,), (1,), 0), tensors
    flat = th.cat([t.detach().reshape(-1).to(th.float32) for t in tensors])
    views, offset = [], 0
    for tensor in tensors:
        views.append(flat[offset : offset + tensor.numel()].view(tensor.shape))
        offset += tensor.numel()
    return flat, views


class FastTrainer:
    """Gradient steps and greedy actions through the kernel, on flat arrays that the model's own tensors view.

    Binding makes the online and the target network's parameters views of one flat float32 buffer each
    (``param.data = flat[a:b].view_as(param)``: the Parameter objects, which the optimizer and the user hold, stay
    the same) and Adam's ``exp_avg``, ``exp_avg_sq`` and ``step`` tensors views of three more, placed in the
    optimizer's state as torch's first ``step()`` would create them. The kernel then updates the very memory that
    ``state_dict()``, ``save`` and the general path use; nothing is copied per call. ``load_state_dict`` or
    ``param.data = ...`` replace tensors: :meth:`ensure_bound`, before every call, notices (about a microsecond)
    and binds again, keeping the current values.
    """

    def __init__(self, model: "SoftUpdateDQN") -> None:
        self.model = model
        self._discounts: dict[tuple[float, int], tuple[np.ndarray, np.ndarray]] = {}
        self.bind()

    @classmethod
    def for_model(cls, model: "SoftUpdateDQN") -> "FastTrainer | None":
        return cls(model) if unsupported_reason(model) is None else None

    def bind(self) -> None:
        """(Re-)establish the flat buffers and the views of them; values are kept."""
        model = self.model
        optimizer = model.policy.optimizer
        online = linear_parameters(model.policy.q_net.q_net)
        target = linear_parameters(model.policy.q_net_target.q_net)
        linears = [layer for layer in model.policy.q_net.q_net if isinstance(layer, nn.Linear)]
        self.dims = np.array([linears[0].in_features] + [layer.out_features for layer in linears], dtype=np.int64)
        self.dueling = isinstance(model.policy.q_net, DuelingQNetwork)
        flats = {}
        for name, params in (("params", online), ("target", target)):
            flats[name], views = _flat_buffer(params)
            for param, view in zip(params, views, strict=True):
                if view is not param:
                    param.data = view
        # The soft update lerps these aliases: one flat pair instead of one pair per tensor
        model._polyak_pairs = ([flats["params"]], [flats["target"]])
        states = []
        for param in online:
            state = optimizer.state[param]
            if not {"step", "exp_avg", "exp_avg_sq"} <= state.keys():  # what Adam's first step creates
                state.clear()
                state["step"] = th.zeros((), dtype=th.float32)
                state["exp_avg"] = th.zeros_like(param, memory_format=th.preserve_format)
                state["exp_avg_sq"] = th.zeros_like(param, memory_format=th.preserve_format)
            states.append(state)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            flats[key], views = _flat_buffer([state[key] for state in states])
            for state, view in zip(states, views, strict=True):
                state[key] = view
        arrays = {name: flat.numpy() for name, flat in flats.items()}
        self.network = kernel.Network(
            *(self.dims, arrays["params"], arrays["target"], arrays["exp_avg"], arrays["exp_avg_sq"], arrays["step"]),
            grads=np.empty_like(arrays["params"]),
        )
        # What is_bound compares: the parameters' data pointers, the optimizer's state container, its
        # per-parameter dicts in order, and the tensors in them
        self.optimizer = optimizer
        self._parameters = online + target
        self._pointers = [p.data_ptr() for p in self._parameters]
        self._state = optimizer.state
        self._state_dicts = states
        self._state_tensors = [(s["exp_avg"], s["exp_avg_sq"], s["step"]) for s in states]

    def is_bound(self) -> bool:
        """Whether the model and its optimizer still hold exactly the bound tensors."""
        optimizer = self.model.policy.optimizer
        if optimizer is not self.optimizer or optimizer.state is not self._state:
            return False  # e.g. optimizer.load_state_dict, which replaces the state container
        if any(p.data_ptr() != pointer for p, pointer in zip(self._parameters, self._pointers, strict=True)):
            return False  # e.g. param.data = ..., or module.to() with a copy
        if len(self._state) != len(self._state_dicts):
            return False
        for state, bound, (exp_avg, exp_avg_sq, step) in zip(
            self._state.values(), self._state_dicts, self._state_tensors, strict=False
        ):
            if state is not bound or state.get("exp_avg") is not exp_avg or state.get("exp_avg_sq") is not exp_avg_sq:
                return False
            if state.get("step") is not step:
                return False
        return True

    def ensure_bound(self) -> None:
        """Bind again if any bound tensor was replaced since."""
        if not self.is_bound():
            self.bind()

    # ------------------------------------------------------------------ compiling
    def compile(self) -> float:
        """Compile (or load from Numba's cache) the kernels this model will call; returns the seconds it took.

        Each kernel is called once on this model's own arrays with nothing to do, so that exactly the type
        signatures training uses are built here, before training starts, rather than inside the first step.
        """
        start = time.perf_counter()
        jit.single_threaded_blas()
        buffer = self.model.replay_buffer
        empty = np.empty((0, self.model.batch_size), dtype=np.int64)
        minibatches = kernel.Minibatches(empty, empty, _NO_ARRAY_2D, _NO_ARRAY_2D)
        kernel.train_steps(self._replay(), minibatches, self.network, self._settings())
        self.greedy_actions(np.zeros((self.model.n_envs, int(self.dims[0])), dtype=np.float32))
        if isinstance(buffer, PrioritizedReplayBuffer):
            buffer.sum_tree.warm_up()
        return time.perf_counter() - start

    @staticmethod
    def cache_is_warm() -> bool:
        """Whether Numba's on-disk cache already holds a compiled training step (then it loads in well under 1 s).

        Read from the cache's index file (a Numba internal), so an unexpected layout counts as "not warm".
        """
        try:
            return os.path.exists(kernel.train_steps._cache._cache_file._index_path)
        except AttributeError:
            return False

    # ------------------------------------------------------------------ training
    def _replay(self) -> kernel.Replay:
        buffer = self.model.replay_buffer
        return kernel.Replay(
            buffer.observations,
            buffer.actions,
            buffer.next_observations,
            buffer.rewards,
            buffer.dones,
            buffer.timeouts,
        )

    def _settings(self) -> kernel.Settings:
        model, buffer = self.model, self.model.replay_buffer
        group = self.optimizer.param_groups[0]
        if isinstance(buffer, NStepReplayBuffer):
            n_step = int(buffer.n_steps)
            reward_discounts, target_discounts = self._discount_tables(float(buffer.gamma), n_step)
            # NStepReplayBuffer treats row pos − 1 (Python's index -1 when pos is 0) as the end of its data
            last_valid = (buffer.pos - 1) % buffer.buffer_size
        else:
            n_step, last_valid = 0, -1
            reward_discounts = target_discounts = _NO_ARRAY_1D
        return kernel.Settings(
            gamma=float(model.gamma),
            lr=float(group["lr"]),
            beta1=float(group["betas"][0]),
            beta2=float(group["betas"][1]),
            eps=float(group["eps"]),
            weight_decay=float(group["weight_decay"]),
            max_grad_norm=-1.0 if model.max_grad_norm is None else float(model.max_grad_norm),
            huber=model.loss == "huber",
            double_q=bool(model.double_q),
            dueling=self.dueling,
            n_step=n_step,
            last_valid=int(last_valid),
            reward_discounts=reward_discounts,
            target_discounts=target_discounts,
        )

    def _discount_tables(self, gamma: float, n_step: int) -> tuple[np.ndarray, np.ndarray]:
        """γᵏ for the rewards (k < n) and for the bootstrap (k ≤ n), as float32 powers like the buffer's."""
        tables = self._discounts.get((gamma, n_step))
        if tables is None:
            tables = self._discounts[(gamma, n_step)] = (
                np.ascontiguousarray(gamma ** np.arange(n_step, dtype=np.float32), dtype=np.float32),
                np.ascontiguousarray(gamma ** np.arange(n_step + 1, dtype=np.float32), dtype=np.float32),
            )
        return tables

    def _draw_indices(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Minibatch positions and env indices, with exactly the random calls of ``ReplayBuffer.sample``."""
        buffer = self.model.replay_buffer
        upper_bound = buffer.buffer_size if buffer.full else buffer.pos
        batch_inds = np.random.randint(0, upper_bound, size=batch_size)
        env_inds = np.random.randint(0, high=buffer.n_envs, size=(batch_size,))
        return batch_inds, env_inds

    def sample(self, batch_size: int) -> tuple[th.Tensor, ...]:
        """(s, a, s′, done, r) of a one-step minibatch drawn with the random calls of ``ReplayBuffer.sample``."""
        buffer = self.model.replay_buffer
        batch_inds, env_inds = self._draw_indices(batch_size)
        dones = buffer.dones[batch_inds, env_inds] * (1 - buffer.timeouts[batch_inds, env_inds])
        return (
            th.from_numpy(buffer.observations[batch_inds, env_inds]).float(),
            th.from_numpy(buffer.actions[batch_inds, env_inds]).long(),
            th.from_numpy(buffer.next_observations[batch_inds, env_inds]).float(),
            th.from_numpy(dones.reshape(-1, 1)),
            th.from_numpy(buffer.rewards[batch_inds, env_inds].reshape(-1, 1)),
        )

    def _draw_prioritized(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Leaves and importance-sampling weights with the computations and random calls of
        ``PrioritizedReplayBuffer.sample`` (the gather that follows there is the kernel's here)."""
        buffer = self.model.replay_buffer
        if not buffer.sum_tree.tree[1] > 0.0:
            raise ValueError("Cannot sample from an empty PrioritizedReplayBuffer")
        leaves, priorities = buffer.sum_tree.sample(np.random.random(batch_size), use_numba=buffer.use_numba)
        weights = ((priorities / priorities.min()) ** (-buffer.beta)).astype(np.float32)
        # The buffer gathers through one-env views whose _get_samples draw env indices with randint(0, 1): NumPy
        # answers that without drawing, but the calls are made all the same, so that the stream stays the buffer's
        # whatever a NumPy does there. The n-step gather of several envs runs per env, in increasing env order.
        if buffer.n_envs > 1 and isinstance(buffer, NStepReplayBuffer):
            for count in np.bincount(leaves % buffer.n_envs):
                if count:
                    np.random.randint(0, 1, size=(int(count),))
        else:
            np.random.randint(0, high=1, size=(batch_size,))
        return leaves, weights

    def train(self, gradient_steps: int, batch_size: int) -> float:
        """Run ``gradient_steps`` steps and return the sum of their losses.

        Uniform replay: all minibatches are drawn first, in the order SB3 draws them, then one call trains on
        them. Prioritized replay: one call per step, each followed by ``update_priorities`` with its TD errors.
        """
        self.ensure_bound()
        buffer = self.model.replay_buffer
        replay, settings = self._replay(), self._settings()
        if isinstance(buffer, PrioritizedReplayBuffer):
            loss_sum = 0.0
            td_errors = np.empty((1, batch_size), dtype=np.float32)
            for _ in range(gradient_steps):
                leaves, weights = self._draw_prioritized(batch_size)
                rows, envs = np.divmod(leaves, buffer.n_envs)
                minibatch = kernel.Minibatches(
                    rows.reshape(1, -1), envs.reshape(1, -1), weights.reshape(1, -1), td_errors
                )
                loss_sum += kernel.train_steps(replay, minibatch, self.network, settings)
                buffer.update_priorities(leaves, td_errors[0])
            return loss_sum
        rows = np.empty((gradient_steps, batch_size), dtype=np.int64)
        envs = np.empty((gradient_steps, batch_size), dtype=np.int64)
        for k in range(gradient_steps):
            rows[k], envs[k] = self._draw_indices(batch_size)
        minibatches = kernel.Minibatches(rows, envs, _NO_ARRAY_2D, _NO_ARRAY_2D)
        return kernel.train_steps(replay, minibatches, self.network, settings)

    def greedy_actions(self, observations: np.ndarray) -> np.ndarray:
        """argmax_a Q(s, a) for a batch of observations (the rollout's exploit step), on the bound weights."""
        observations = np.asarray(observations, dtype=np.float32)
        return kernel.greedy_actions(self.network.params, self.dims, observations, self.dueling)


# Stand-ins for the kernel's optional arrays (no discount tables, no weights, no TD errors wanted)
_NO_ARRAY_1D = np.empty(0, dtype=np.float32)
_NO_ARRAY_2D = np.empty((0, 0), dtype=np.float32)
