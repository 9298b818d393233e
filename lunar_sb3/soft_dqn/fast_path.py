"""Fast training path of SoftUpdateDQN: the same numbers as the autograd path, without framework overhead.

For a 64-64 MLP and a minibatch of 64, per-operator overhead, not arithmetic, decides the cost of a gradient
step: autograd records and replays a graph and ``Optimizer.step`` runs hooks and checks around one kernel.
For what the lab uses (a stack of Linear/ReLU layers, an MSE or Huber loss, Adam) the whole gradient step is
one Numba-compiled call (:mod:`lunar_sb3.soft_dqn.compiled`) that sums in torch's own orders; without Numba
(or with ``LUNAR_SB3_NUMBA=0``) the backward pass is written out by hand with the kernels autograd itself would
run and Adam runs as the single fused kernel that ``Adam(fused=True)`` calls. Either way results agree with
autograd to float rounding or better (ReLU and argmax decisions are then taken identically, which keeps the
two paths together over long runs). Action selection, where a handful of observations meet the network, runs
compiled (or in NumPy) on the same weights: a few microseconds instead of tens. The replay memory is sampled
with the same random calls as the buffer's own ``sample``, so a seeded run trains on the same minibatches either
way.

Rainbow-lite's replay runs here too. N-step returns (``NStepReplayBuffer``): the kernel gathers each sample's
n-step return, discount and bootstrap state as SB3's ``_get_samples`` computes them. Prioritized replay
(``PrioritizedReplayBuffer``, alone or with n-step returns): the minibatch is drawn from the buffer's sum tree with
its random calls, the loss is weighted by the importance-sampling weights, and the TD errors of the step go back
to ``update_priorities``, one gradient step per kernel call (the next draw depends on the new priorities).
Dueling networks (``DuelingDQNPolicy``): the stack's last layer holds the value and advantage heads, and the
kernel combines them into Q = V + A − mean A and back-propagates through that combination as autograd does.

The fast path is an allow-list (:func:`unsupported_reason`): it runs only for configurations it implements
exactly, checked at every ``learn``; anything else (custom features extractors, other buffers, optimizers or
optimizer options, ``VecNormalize``, non-CPU devices, a torch without the private kernels used here) trains on
the general path; ``model.uses_fast_path`` says which, ``use_fast_path=False`` forces the general path.
"""

from typing import TYPE_CHECKING

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.type_aliases import TrainFrequencyUnit
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn

from lunar_sb3.soft_dqn import compiled
from lunar_sb3.soft_dqn.policies import DuelingDQNPolicy, DuelingQNetwork
from lunar_sb3.soft_dqn.prioritized import PrioritizedNStepReplayBuffer, PrioritizedReplayBuffer

if TYPE_CHECKING:
    from lunar_sb3.soft_dqn.soft_dqn import SoftUpdateDQN


# Private torch entry points used below; each can vanish in a release, so each is checked before it is relied on
HAS_FUSED_ADAM = hasattr(th, "_fused_adam_")
HAS_FOREACH = all(hasattr(th, name) for name in ("_foreach_lerp_", "_foreach_add_", "_foreach_norm", "_foreach_mul_"))
HAS_THRESHOLD_BACKWARD = hasattr(th.ops.aten, "threshold_backward")

# Adam's options and the values the fused kernel call in FastTrainer._adam_step implements. "lr", "betas", "eps"
# and "weight_decay" are passed to the kernel as they are; "foreach" is irrelevant once "fused" is set. Any other
# key (a newer torch's option) or value sends training to the general path.
ADAM_OPTIONS_IMPLEMENTED = {
    "amsgrad": (False,),
    "maximize": (False,),
    "capturable": (False,),
    "differentiable": (False,),
    "decoupled_weight_decay": (False,),
    "fused": (True,),
    "foreach": (None, False, True),
}
ADAM_OPTIONS_PASSED = {"params", "lr", "betas", "eps", "weight_decay", "initial_lr"}

# The replay buffers whose sampling the fast path reproduces, by exact type: a subclass may sample otherwise
FAST_REPLAY_BUFFERS = (ReplayBuffer, NStepReplayBuffer, PrioritizedReplayBuffer, PrioritizedNStepReplayBuffer)
# The policies the fast path trains, by exact type, and the network class each must hold (online and target)
FAST_NETWORKS = {DQNPolicy: QNetwork, DuelingDQNPolicy: DuelingQNetwork}


def lerp_all(targets: list[th.Tensor], sources: list[th.Tensor], weight: float) -> None:
    """targets ← targets + weight·(sources − targets), in one fused call when torch has it."""
    if HAS_FOREACH:
        th._foreach_lerp_(targets, sources, weight)
    else:
        for target, source in zip(targets, sources, strict=True):
            target.lerp_(source, weight)


class LinearReluStack:
    """A Linear/ReLU ``nn.Sequential`` with a forward and a hand-written backward pass.

    It holds the module's own parameter tensors (and NumPy views of their memory), which the optimizer,
    Polyak updates and ``load_state_dict`` all modify in place, so it never goes stale. ``dueling``: the last
    layer outputs [V, A] and Q = V + A − mean A (``DuelingQNetwork``).
    """

    def __init__(self, sequential: nn.Sequential, dueling: bool = False) -> None:
        self.dueling = dueling
        linears = [layer for layer in sequential if isinstance(layer, nn.Linear)]
        self.weights = [layer.weight.detach() for layer in linears]
        self.biases = [layer.bias.detach() for layer in linears]
        self.np_weights = [weight.numpy() for weight in self.weights]
        self.np_biases = [bias.numpy() for bias in self.biases]

    @staticmethod
    def supports(sequential: nn.Module) -> bool:
        layers = list(sequential) if isinstance(sequential, nn.Sequential) else []
        pattern_ok = len(layers) % 2 == 1 and all(
            isinstance(layer, nn.Linear if i % 2 == 0 else nn.ReLU) for i, layer in enumerate(layers)
        )
        return pattern_ok and all(layer.bias is not None for layer in layers[::2])

    def forward(self, x: th.Tensor) -> tuple[th.Tensor, list[th.Tensor]]:
        """Q-values and the input of every Linear layer (what :meth:`backward` needs)."""
        inputs = []
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            inputs.append(x)
            x = th.addmm(bias, x, weight.t())  # x·Wᵀ + b, the kernel nn.Linear runs
            if i < last:
                x = th.relu(x)
        if self.dueling:  # as DuelingQNetwork.forward
            value, advantages = x[:, :1], x[:, 1:]
            x = value + advantages - advantages.mean(dim=1, keepdim=True)
        return x, inputs

    def backward(self, inputs: list[th.Tensor], grad_output: th.Tensor) -> list[th.Tensor]:
        """Gradients of the loss w.r.t. [W1, b1, W2, b2, ...] given ∂loss/∂Q (chain rule, layer by layer)."""
        grads: list[th.Tensor] = []
        grad = grad_output
        if self.dueling:  # back through Q = V + A − mean A, as autograd does it
            grad_sum = grad.sum(dim=1, keepdim=True)
            grad = th.cat([grad_sum, grad + (-grad).sum(dim=1, keepdim=True) / grad.shape[1]], dim=1)
        for i in range(len(self.weights) - 1, -1, -1):
            layer_input = inputs[i]
            grads[:0] = [grad.t().mm(layer_input), grad.sum(dim=0)]  # ∂L/∂W = δᵀ·a, ∂L/∂b = Σ δ
            if i > 0:
                # δ of the layer below: back through W, then through the ReLU that produced a (zero where a = 0);
                # threshold_backward is the kernel of ReLU's own backward
                grad = th.ops.aten.threshold_backward(grad.mm(self.weights[i]), layer_input, 0)
        return grads

    def greedy_actions(self, observations: np.ndarray) -> np.ndarray:
        """argmax_a Q(s, a) for a batch of observations, in NumPy."""
        x = np.asarray(observations, dtype=np.float32)
        last = len(self.np_weights) - 1
        for i, (weight, bias) in enumerate(zip(self.np_weights, self.np_biases, strict=True)):
            x = x @ weight.T + bias
            if i < last:
                np.maximum(x, 0, out=x)
        if self.dueling:
            x = x[:, :1] + x[:, 1:] - x[:, 1:].mean(axis=1, keepdims=True)
        return x.argmax(axis=1)


def clip_grad_norm(grads: list[th.Tensor], max_norm: float) -> None:
    """Scale ``grads`` in place as ``torch.nn.utils.clip_grad_norm_`` scales ``param.grad``."""
    total_norm = th.linalg.vector_norm(th.stack(th._foreach_norm(grads)))
    th._foreach_mul_(grads, (max_norm / (total_norm + 1e-6)).clamp(max=1.0))


def _is_vector_space(space: spaces.Space) -> bool:
    return isinstance(space, spaces.Box) and len(space.shape) == 1


def _optimizer_reason(optimizer: th.optim.Optimizer) -> str | None:
    """Why this optimizer's step differs from the fused Adam kernel call, or None."""
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
    return None


def unsupported_reason(model: "SoftUpdateDQN") -> str | None:
    """Why ``model`` must train on the general path, or None if the fast path implements it exactly."""
    if not getattr(model, "use_fast_path", True):
        return "use_fast_path=False"
    if not (HAS_FUSED_ADAM and HAS_FOREACH and HAS_THRESHOLD_BACKWARD):
        return f"this torch {th.__version__} lacks the private kernels the fast path calls"
    q_net = model.policy.q_net
    buffer = model.replay_buffer
    checks = [
        (model.device.type == "cpu", f"the device {model.device}"),
        (_is_vector_space(model.observation_space), "a non-vector observation space"),
        (isinstance(model.action_space, spaces.Discrete) and model.action_space.start == 0, "a shifted action space"),
        (type(q_net.features_extractor) is FlattenExtractor, "a custom features extractor"),
        (type(buffer) in FAST_REPLAY_BUFFERS, f"the replay buffer {type(buffer).__name__}"),
        (not model.optimize_memory_usage, "optimize_memory_usage=True"),
        # NStepReplayBuffer's discounts are float32 only for a Python float γ (a NumPy float64 makes them float64)
        (not isinstance(buffer, NStepReplayBuffer) or type(buffer.gamma) in (float, int), "a non-Python-float γ"),
        (model._vec_normalize_env is None, "VecNormalize (the buffer is sampled through its normalisation)"),
        (model.train_freq.unit == TrainFrequencyUnit.STEP, "train_freq counted in episodes"),
        (all(p.dtype == th.float32 for p in model.policy.parameters()), "non-float32 weights"),
    ]
    for ok, what in checks:
        if not ok:
            return what
    return _network_reason(model) or _optimizer_reason(model.policy.optimizer)


def _network_reason(model: "SoftUpdateDQN") -> str | None:
    """Why the Q-network or the target network is not what the fast path computes, or None.

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
        if not LinearReluStack.supports(getattr(network, "q_net", None)):
            return "a network that is not a Linear/ReLU stack"
    online, target = ([tuple(p.shape) for p in network.parameters()] for network in networks)
    if online != target:
        return "a target network shaped unlike the Q-network"
    outputs, n_actions = online[-1][0], int(model.action_space.n)  # the last bias: one per output
    if outputs != n_actions + (network_class is DuelingQNetwork):
        return f"a last layer with {outputs} outputs for {n_actions} actions"
    return None


class FastTrainer:
    """Gradient steps with hand-derived gradients; numerically equal to ``SoftUpdateDQN._train_general``."""

    def __init__(self, model: "SoftUpdateDQN") -> None:
        self.model = model
        # Bound first: binding may make the parameters views of a flat buffer, which the NumPy views below must see
        self.compiled = compiled.CompiledTrainer.for_model(model)
        self._view_parameters()

    def _view_parameters(self) -> None:
        model = self.model
        dueling = isinstance(model.policy.q_net, DuelingQNetwork)
        self.q_net = LinearReluStack(model.policy.q_net.q_net, dueling)
        self.q_net_target = LinearReluStack(model.policy.q_net_target.q_net, dueling)
        self.parameters = list(model.policy.q_net.parameters())

    @classmethod
    def for_model(cls, model: "SoftUpdateDQN") -> "FastTrainer | None":
        return cls(model) if unsupported_reason(model) is None else None

    @property
    def gradient_step(self) -> str:
        """How a gradient step is computed: ``"compiled"`` (Numba) or ``"torch"`` (and, if so, why)."""
        if self.compiled is not None:
            return "compiled"
        return f"torch ({compiled.CompiledTrainer.unsupported_reason(self.model)})"

    def _draw_indices(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Minibatch positions and env indices, with exactly the random calls of ``ReplayBuffer.sample``."""
        buffer = self.model.replay_buffer
        upper_bound = buffer.buffer_size if buffer.full else buffer.pos
        batch_inds = np.random.randint(0, upper_bound, size=batch_size)
        env_inds = np.random.randint(0, high=buffer.n_envs, size=(batch_size,))
        return batch_inds, env_inds

    def sample(self, batch_size: int) -> tuple[th.Tensor, ...]:
        """A one-step minibatch drawn with exactly the random calls of ``ReplayBuffer.sample`` (plain buffer)."""
        buffer = self.model.replay_buffer
        batch_inds, env_inds = self._draw_indices(batch_size)
        # Only terminations stop bootstrapping; time-limit truncations do not
        dones = buffer.dones[batch_inds, env_inds] * (1 - buffer.timeouts[batch_inds, env_inds])
        return (
            th.from_numpy(buffer.observations[batch_inds, env_inds]).float(),
            th.from_numpy(buffer.actions[batch_inds, env_inds]).long(),
            th.from_numpy(buffer.next_observations[batch_inds, env_inds]).float(),
            th.from_numpy(dones.reshape(-1, 1)),
            th.from_numpy(buffer.rewards[batch_inds, env_inds].reshape(-1, 1)),
        )

    def _draw_prioritized(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Leaves and importance-sampling weights as ``PrioritizedReplayBuffer.sample`` computes them.

        The same computations and random calls, so that a seeded run replays the same slots with the same weights
        on either path; the gather that follows there is the kernel's here.
        """
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

        For prioritized replay, each step also sets the priorities of what it replayed (``update_priorities`` with
        the step's TD errors, as ``_train_general`` does), since the next step draws from them.
        """
        if self.compiled is None:
            return self._train_torch(gradient_steps, batch_size)
        if self.compiled.ensure_bound():  # something replaced the bound tensors (e.g. a load): views renewed
            self._view_parameters()
        buffer = self.model.replay_buffer
        if isinstance(buffer, PrioritizedReplayBuffer):
            # One kernel call per step: the next minibatch is drawn from the priorities this step sets
            loss_sum = 0.0
            td_errors = np.empty((1, batch_size), dtype=np.float32)
            for _ in range(gradient_steps):
                leaves, weights = self._draw_prioritized(batch_size)
                rows, envs = np.divmod(leaves, buffer.n_envs)
                loss_sum += self.compiled.train(
                    rows.reshape(1, -1), envs.reshape(1, -1), weights.reshape(1, -1), td_errors
                )
                buffer.update_priorities(leaves, td_errors[0])
            return loss_sum
        # Uniform replay: all minibatches are drawn first, in the order SB3 draws them; then one compiled call
        # trains on them (for an n-step buffer the kernel computes the n-step returns of the drawn slots)
        if gradient_steps == 1:
            batch_inds, env_inds = (
                np.asarray(a, dtype=np.int64).reshape(1, -1) for a in self._draw_indices(batch_size)
            )
        else:
            batch_inds = np.empty((gradient_steps, batch_size), dtype=np.int64)
            env_inds = np.empty((gradient_steps, batch_size), dtype=np.int64)
            for k in range(gradient_steps):
                batch_inds[k], env_inds[k] = self._draw_indices(batch_size)
        return self.compiled.train(batch_inds, env_inds)

    def greedy_actions(self, observations: np.ndarray) -> np.ndarray:
        """argmax_a Q(s, a) for a batch of observations (the rollout's exploit step)."""
        if self.compiled is not None:
            return self.compiled.greedy_actions(observations)
        return self.q_net.greedy_actions(observations)

    def _torch_minibatch(self, batch_size: int) -> tuple[th.Tensor | float | np.ndarray | None, ...]:
        """(s, a, s′, done, r, discount, weights, indices) of one minibatch for the torch step.

        The plain buffer is sampled by :meth:`sample` (SB3's random calls without its copies); the others by their
        own ``sample``, which computes n-step returns and discounts, or draws by priority with weights and leaves.
        """
        buffer = self.model.replay_buffer
        if type(buffer) is ReplayBuffer:
            return (*self.sample(batch_size), self.model.gamma, None, None)
        batch = buffer.sample(batch_size, env=None)
        discounts = self.model.gamma if batch.discounts is None else batch.discounts
        weights, indices = getattr(batch, "weights", None), getattr(batch, "indices", None)
        return (
            batch.observations,
            batch.actions.long(),
            batch.next_observations,
            batch.dones,
            batch.rewards,
            discounts,
            weights,
            indices,
        )

    @th.no_grad()
    def _train_torch(self, gradient_steps: int, batch_size: int) -> float:
        """The gradient steps with torch kernels: the path when Numba is missing or switched off."""
        model = self.model
        loss_sum = 0.0
        # MeanBackward's 1/B: the grad 1.0 divided by the count, in float32
        inverse_batch = th.ones((), dtype=th.float32) / batch_size
        for _ in range(gradient_steps):
            obs, actions, next_obs, dones, rewards, discounts, weights, indices = self._torch_minibatch(batch_size)
            # TD target y = r + γ·max_a′ Q̂(s′, a′)·(1 − done), or Q̂(s′, argmax_a′ Q(s′, a′)) for Double DQN; γ is the
            # sample's own discount for n-step returns
            next_q_target, _ = self.q_net_target.forward(next_obs)
            if model.double_q:
                next_actions = self.q_net.forward(next_obs)[0].argmax(dim=1, keepdim=True)
                next_q = next_q_target.gather(1, next_actions)
            else:
                next_q = next_q_target.max(dim=1, keepdim=True).values
            target_q = rewards + (1 - dones) * discounts * next_q

            q_values, inputs = self.q_net.forward(obs)
            error = q_values.gather(1, actions) - target_q
            if model.loss == "mse":
                per_sample = error.square()
            else:
                abs_error = error.abs()
                per_sample = th.where(abs_error < 1, 0.5 * error.square(), abs_error - 0.5)
            if weights is None:  # ∂ mean(loss) / ∂e, as the mean-reduced losses' backward
                loss = per_sample.mean()
                if model.loss == "mse":
                    grad_error = error * (2.0 / batch_size)
                else:
                    grad_error = error.clamp(-1.0, 1.0) / batch_size
            else:  # ∂ mean(w·loss) / ∂e: the unreduced losses' backward with grad_output g = w/B
                loss = (weights * per_sample).mean()
                g = weights * inverse_batch
                if model.loss == "mse":
                    grad_error = (2.0 * error) * g
                else:
                    grad_error = th.where(error <= -1.0, -g, th.where(error >= 1.0, g, error * g))
            grad_q = th.zeros_like(q_values).scatter_(1, actions, grad_error)  # only Q(s, a) enters the loss

            grads = self.q_net.backward(inputs, grad_q)
            if model.max_grad_norm is not None:
                clip_grad_norm(grads, model.max_grad_norm)
            self._adam_step(model.policy.optimizer, grads)
            if indices is not None:  # new priority |δ| + ε for what was replayed, δ from before the step
                model.replay_buffer.update_priorities(indices, error)
            loss_sum += float(loss)
        return loss_sum

    def _adam_step(self, optimizer: th.optim.Optimizer, grads: list[th.Tensor]) -> None:
        """Adam's update through the fused kernel that ``Adam(fused=True).step()`` calls.

        ``Optimizer.step`` spends most of its time on hooks, profiling and grouping checks for six tiny
        tensors; the arithmetic is one kernel call. The first step (which creates the state) and any Adam
        option the kernel call below does not pass go through ``optimizer.step()`` itself.
        """
        group = optimizer.param_groups[0]
        states = [optimizer.state.get(param) for param in self.parameters]
        plain_fused_adam = group["fused"] and not (
            group["amsgrad"] or group["maximize"] or group["capturable"] or group["differentiable"]
        )
        if not plain_fused_adam or len(optimizer.param_groups) > 1 or not all(states):
            for param, grad in zip(self.parameters, grads, strict=True):
                param.grad = grad
            optimizer.step()
            return
        steps = [state["step"] for state in states]
        th._foreach_add_(steps, 1)
        th._fused_adam_(
            self.parameters,
            grads,
            [state["exp_avg"] for state in states],
            [state["exp_avg_sq"] for state in states],
            [],
            steps,
            amsgrad=False,
            lr=group["lr"],
            beta1=group["betas"][0],
            beta2=group["betas"][1],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
        )
