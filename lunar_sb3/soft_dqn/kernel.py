"""The fast path's gradient step and greedy action as plain compiled loops (Numba).

Why: for a 64-64 MLP and a minibatch of 64, a gradient step through torch is ~35 operator calls whose dispatch
costs more than their arithmetic. Here the whole step — minibatch gather, TD target, forward pass, the backward
pass derived by hand, gradient clipping and Adam — is one compiled call per ``train``, written in the order of
the formulas in ``SoftUpdateDQN.td_loss_and_errors`` and ``torch.optim.Adam``.

The matrix products are ``np.dot`` (Numba calls SciPy's BLAS for them: a plain loop is 3-4x slower at these
sizes); everything else is a loop. Same math, not the same bits: sums run in this BLAS's and these loops' order,
torch's in its own, so results agree with autograd to float32 rounding (tests: one step within 1e-6 relative;
seeded training runs within 1e-4), on any CPU.

Layout: a network's parameters are one flat float32 array [W0, b0, W1, b1, ...] with W_l shaped like
``nn.Linear.weight`` ([out, in], row-major); Adam's moments use the same layout, ``steps`` holds Adam's step
count per tensor. ``dims`` are the widths [inputs, hidden..., outputs]. A dueling network's last layer outputs
[V, A_1..A_n] and Q = V + A − mean A.
"""

from typing import NamedTuple

import numpy as np

from lunar_sb3.soft_dqn.jit import jit


class Replay(NamedTuple):
    """SB3's ``ReplayBuffer`` arrays, indexed [position, env, ...]."""

    observations: np.ndarray
    actions: np.ndarray
    next_observations: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    timeouts: np.ndarray


class Minibatches(NamedTuple):
    """Minibatch k is the slots (rows[k, b], envs[k, b]); ``weights`` and ``td_errors`` are [0, 0] when unused.

    ``weights``: prioritized replay's importance-sampling weights; ``td_errors`` receives δ = Q(s, a) − y of
    each sample, computed before its step's update.
    """

    rows: np.ndarray
    envs: np.ndarray
    weights: np.ndarray
    td_errors: np.ndarray


class Network(NamedTuple):
    """Online and target parameters, Adam's moments and per-tensor step counts (all updated in place), and room
    for the gradient (kept between calls: a fresh array of a 256-256 network's size costs page faults each time)."""

    dims: np.ndarray
    params: np.ndarray
    target: np.ndarray
    exp_avg: np.ndarray
    exp_avg_sq: np.ndarray
    steps: np.ndarray
    grads: np.ndarray


class Settings(NamedTuple):
    """The step's hyperparameters. ``n_step`` 0: one-step transitions; n: ``NStepReplayBuffer``'s n-step returns,
    with ``reward_discounts`` = γᵏ (k < n) and ``target_discounts`` = γᵏ (k ≤ n), and ``last_valid`` the row
    SB3 treats as the end of the data. ``max_grad_norm`` <= 0: no clipping."""

    gamma: float
    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    max_grad_norm: float
    huber: bool
    double_q: bool
    dueling: bool
    n_step: int
    last_valid: int
    reward_discounts: np.ndarray
    target_discounts: np.ndarray


@jit
def layer_offsets(dims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where W_l and b_l start in a flat parameter array."""
    n_layers = dims.shape[0] - 1
    weight_offsets = np.empty(n_layers, np.int64)
    bias_offsets = np.empty(n_layers, np.int64)
    offset = 0
    for layer in range(n_layers):
        weight_offsets[layer] = offset
        offset += dims[layer + 1] * dims[layer]
        bias_offsets[layer] = offset
        offset += dims[layer + 1]
    return weight_offsets, bias_offsets


@jit
def layer_arrays(dims: np.ndarray, batch: int) -> list:
    """[batch, width] float32 arrays for a network's input and every layer's output (or their gradients)."""
    return [np.empty((batch, dims[layer]), np.float32) for layer in range(dims.shape[0])]


@jit
def weight_and_bias(params: np.ndarray, dims: np.ndarray, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """W_l ([out, in], as ``nn.Linear.weight``) and b_l: views of the flat parameters."""
    weight_offsets, bias_offsets = layer_offsets(dims)
    n_in, n_out = dims[layer], dims[layer + 1]
    start, bias = weight_offsets[layer], bias_offsets[layer]
    return params[start : start + n_out * n_in].reshape((n_out, n_in)), params[bias : bias + n_out]


@jit
def forward(params: np.ndarray, dims: np.ndarray, activations: list) -> None:
    """activations[l + 1] = ReLU(activations[l]·W_lᵀ + b_l), no ReLU after the last layer."""
    n_layers = dims.shape[0] - 1
    for layer in range(n_layers):
        weight, bias = weight_and_bias(params, dims, layer)
        out = activations[layer + 1]
        np.dot(activations[layer], weight.T, out)
        for b in range(out.shape[0]):
            for j in range(out.shape[1]):
                value = out[b, j] + bias[j]
                out[b, j] = max(value, np.float32(0.0)) if layer < n_layers - 1 else value


@jit
def q_values(outputs: np.ndarray, dueling: bool, q: np.ndarray) -> None:
    """q = Q from the last layer's outputs: the outputs, or V + A − mean A for a dueling network."""
    n_actions = q.shape[1]
    for b in range(outputs.shape[0]):
        if not dueling:
            for a in range(n_actions):
                q[b, a] = outputs[b, a]
            continue
        mean = np.float32(0.0)
        for a in range(n_actions):
            mean += outputs[b, 1 + a]
        mean /= np.float32(n_actions)
        for a in range(n_actions):
            q[b, a] = outputs[b, 0] + outputs[b, 1 + a] - mean


@jit
def argmax(q: np.ndarray, b: int) -> int:
    """The first action with the largest Q(s_b, a), as torch's ``argmax``."""
    best = 0
    for a in range(1, q.shape[1]):
        if q[b, a] > q[b, best]:
            best = a
    return best


@jit
def gather(replay: Replay, rows: np.ndarray, envs: np.ndarray, settings: Settings, batch: tuple) -> None:
    """The minibatch at (rows[b], envs[b]) as SB3's ``_get_samples`` computes it, into ``batch`` = (s, a, s′, r,
    done, discount).

    One-step (``ReplayBuffer``): done·(1 − timeout) and γ. N-step (``NStepReplayBuffer``): the transition runs to
    the first done or timeout within n steps (inclusive), row ``last_valid`` counting as a timeout; r = Σ_k γᵏ·r_k
    over those steps; s′ and done·(1 − timeout) of its last step; discount γ^(steps taken).
    """
    obs, taken, next_obs, rewards, dones, discounts = batch
    buffer_size = replay.rewards.shape[0]
    n = settings.n_step
    for b in range(rows.shape[0]):
        i, e = rows[b], envs[b]
        taken[b] = replay.actions[i, e, 0]
        if n == 0:
            last = i
            rewards[b] = replay.rewards[i, e]
            discounts[b] = settings.gamma
        else:
            end = n - 1  # the last step taken
            for k in range(n):
                j = (i + k) % buffer_size
                if replay.dones[j, e] != 0 or replay.timeouts[j, e] != 0 or j == settings.last_valid:
                    end = k
                    break
            total = np.float32(0.0)
            for k in range(end + 1):
                total += replay.rewards[(i + k) % buffer_size, e] * settings.reward_discounts[k]
            rewards[b] = total
            last = (i + end) % buffer_size
            discounts[b] = settings.target_discounts[end + 1]
        # only terminations stop bootstrapping, not time limits (SB3's temporary timeout mark on row last_valid
        # changes this product only where done is 0)
        dones[b] = replay.dones[last, e] * (1 - replay.timeouts[last, e])
        for f in range(obs.shape[1]):
            obs[b, f] = replay.observations[i, e, f]
            next_obs[b, f] = replay.next_observations[last, e, f]


@jit
def backward(params: np.ndarray, dims: np.ndarray, activations: list, deltas: list, grads: np.ndarray) -> None:
    """From deltas[-1] = ∂L/∂outputs, layer by layer: ∂L/∂W_l = δᵀ·a, ∂L/∂b_l = Σ_batch δ, and the δ of the layer
    below = (δ·W_l) where its ReLU output a > 0."""
    for layer in range(dims.shape[0] - 2, -1, -1):
        delta, below, x = deltas[layer + 1], deltas[layer], activations[layer]
        weight, _ = weight_and_bias(params, dims, layer)
        weight_grad, bias_grad = weight_and_bias(grads, dims, layer)
        np.dot(delta.T, x, weight_grad)
        sums = np.zeros(delta.shape[1])  # in float64: sixty-odd terms that largely cancel
        for b in range(delta.shape[0]):
            for j in range(delta.shape[1]):
                sums[j] += delta[b, j]
        for j in range(delta.shape[1]):
            bias_grad[j] = sums[j]
        if layer > 0:
            np.dot(delta, weight, below)
            for b in range(below.shape[0]):
                for i in range(below.shape[1]):
                    below[b, i] = below[b, i] if x[b, i] > 0.0 else np.float32(0.0)


@jit
def clip_and_adam(network: Network, grads: np.ndarray, settings: Settings) -> None:
    """``clip_grad_norm_`` (if set), then ``torch.optim.Adam``'s update of every tensor, with L2 weight decay."""
    dims = network.dims
    weight_offsets, bias_offsets = layer_offsets(dims)
    if settings.max_grad_norm > 0.0:  # g ← g · min(1, max_norm / (‖g‖ + 1e-6)), ‖g‖ over all tensors
        total = 0.0
        for g in grads:
            total += float(g) * float(g)
        coefficient = min(1.0, settings.max_grad_norm / (np.sqrt(total) + 1e-6))
        for d in range(grads.shape[0]):
            grads[d] = grads[d] * np.float32(coefficient)
    beta2, one_minus_beta1 = np.float32(settings.beta2), np.float32(1.0 - settings.beta1)
    one_minus_beta2 = np.float32(1.0 - settings.beta2)
    decay, eps = np.float32(settings.weight_decay), np.float32(settings.eps)
    for t in range(2 * (dims.shape[0] - 1)):
        layer = t // 2
        start = weight_offsets[layer] if t % 2 == 0 else bias_offsets[layer]
        end = start + dims[layer + 1] * (dims[layer] if t % 2 == 0 else 1)
        p, m, v = network.params[start:end], network.exp_avg[start:end], network.exp_avg_sq[start:end]
        g = grads[start:end]
        network.steps[t] += 1
        step = float(network.steps[t])
        step_size = np.float32(settings.lr / (1.0 - settings.beta1**step))  # lr / (1 − β1ᵗ)
        correction2 = np.float32(np.sqrt(1.0 - settings.beta2**step))  # √(1 − β2ᵗ)
        for d in range(end - start):
            gradient = g[d] + decay * p[d]  # L2 weight decay enters the gradient
            m[d] += one_minus_beta1 * (gradient - m[d])  # m ← β1·m + (1 − β1)·g
            v[d] = beta2 * v[d] + one_minus_beta2 * gradient * gradient  # v ← β2·v + (1 − β2)·g²
            p[d] -= step_size * m[d] / (np.sqrt(v[d]) / correction2 + eps)  # w ← w − lr·m̂ / (√v̂ + ε)


@jit
def train_steps(replay: Replay, minibatches: Minibatches, network: Network, settings: Settings) -> float:
    """One gradient step of ``SoftUpdateDQN._train_general`` per minibatch; returns the sum of their losses."""
    n_steps, batch = minibatches.rows.shape
    dims = network.dims
    n_actions = dims[-1] - 1 if settings.dueling else dims[-1]
    # Scratch, allocated once per call: activations (the online ones kept for the backward pass) and gradients δ
    online, target, deltas = layer_arrays(dims, batch), layer_arrays(dims, batch), layer_arrays(dims, batch)
    q = np.empty((batch, n_actions), np.float32)
    taken = np.empty(batch, np.int64)
    next_actions = np.empty(batch, np.int64)
    rewards = np.empty(batch, np.float32)
    dones = np.empty(batch, np.float32)
    discounts = np.empty(batch, np.float32)
    targets = np.empty(batch, np.float32)
    grads = network.grads
    weighted = minibatches.weights.shape[0] > 0
    loss_sum = 0.0
    for k in range(n_steps):
        samples = (online[0], taken, target[0], rewards, dones, discounts)  # s, a, s′, r, done, γ
        gather(replay, minibatches.rows[k], minibatches.envs[k], settings, samples)

        # TD target y = r + (1 − done)·γ·max_a′ Q̂(s′, a′), or Q̂(s′, argmax_a′ Q(s′, a′)) for Double DQN; γ is the
        # sample's discount (γⁿ, fewer steps at an episode end, for n-step returns)
        if settings.double_q:
            forward(network.params, dims, target)
            q_values(target[-1], settings.dueling, q)
            for b in range(batch):
                next_actions[b] = argmax(q, b)
        forward(network.target, dims, target)
        q_values(target[-1], settings.dueling, q)
        for b in range(batch):
            next_value = q[b, next_actions[b] if settings.double_q else argmax(q, b)]
            targets[b] = rewards[b] + (1 - dones[b]) * discounts[b] * next_value

        # Loss on δ = Q(s, a) − y: mean of δ² (MSE) or of Huber(δ) (β = 1), each weighted by w for prioritized
        # replay; ∂L/∂Q(s, a) = w·2δ/B, or w·clamp(δ, −1, 1)/B
        forward(network.params, dims, online)
        q_values(online[-1], settings.dueling, q)
        grad_outputs = deltas[-1]
        loss = 0.0
        for b in range(batch):
            error = q[b, taken[b]] - targets[b]
            if minibatches.td_errors.shape[0] > 0:
                minibatches.td_errors[k, b] = error
            if settings.huber:
                sample_loss = 0.5 * error * error if abs(error) < 1 else abs(error) - 0.5
                gradient = min(max(error, np.float32(-1.0)), np.float32(1.0))
            else:
                sample_loss = error * error
                gradient = 2 * error
            weight = minibatches.weights[k, b] if weighted else np.float32(1.0)
            loss += float(weight) * float(sample_loss)
            gradient = weight * gradient / np.float32(batch)
            if settings.dueling:  # back through Q_a = V + A_a − mean A: ∂/∂V = g, ∂/∂A_j = g·([j = a] − 1/n)
                grad_outputs[b, 0] = gradient
                for a in range(n_actions):
                    grad_outputs[b, 1 + a] = -gradient / np.float32(n_actions)
                grad_outputs[b, 1 + taken[b]] += gradient
            else:  # only Q(s, a) of the taken action enters the loss
                for a in range(n_actions):
                    grad_outputs[b, a] = 0.0
                grad_outputs[b, taken[b]] = gradient
        loss_sum += loss / batch

        backward(network.params, dims, online, deltas, grads)
        clip_and_adam(network, grads, settings)
    return loss_sum


@jit
def greedy_actions(params: np.ndarray, dims: np.ndarray, observations: np.ndarray, dueling: bool) -> np.ndarray:
    """argmax_a Q(s, a) for a few observations (the rollout's exploit step).

    Row by row with dot products along W's rows: for one to a few observations a BLAS call costs more than it saves.
    """
    n_layers = dims.shape[0] - 1
    weight_offsets, bias_offsets = layer_offsets(dims)
    x = np.empty(dims.max(), np.float32)
    y = np.empty(dims.max(), np.float32)
    q = np.empty((1, dims[-1] - 1 if dueling else dims[-1]), np.float32)
    actions = np.empty(observations.shape[0], np.int64)
    for b in range(observations.shape[0]):
        for f in range(dims[0]):
            x[f] = observations[b, f]
        for layer in range(n_layers):
            n_in, n_out = dims[layer], dims[layer + 1]
            for j in range(n_out):
                start = weight_offsets[layer] + j * n_in
                row = params[start : start + n_in]  # W_l[j, :]
                total = params[bias_offsets[layer] + j]
                for i in range(n_in):
                    total += row[i] * x[i]
                y[j] = max(total, np.float32(0.0)) if layer < n_layers - 1 else total
            x, y = y, x
        q_values(x[: dims[-1]].reshape((1, dims[-1])), dueling, q)
        actions[b] = argmax(q, 0)
    return actions
