"""Soft-update Deep Q-Learning: the "Deep Q-Learning - Lunar Lander" lab as a Stable-Baselines3 ``DQN``."""

import os
import warnings
from typing import Any, ClassVar, TypeVar

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import (
    GymEnv,
    ReplayBufferSamples,
    RolloutReturn,
    Schedule,
    TrainFreq,
)
from stable_baselines3.common.vec_env import VecEnv

from lunar_sb3.soft_dqn import fast_path, fast_rollout
from lunar_sb3.soft_dqn.checks import LOSSES, check_hyperparameters
from lunar_sb3.soft_dqn.model_file import check_soft_dqn_zip
from lunar_sb3.soft_dqn.policies import CnnPolicy, DQNPolicy, DuelingDQNPolicy, MlpPolicy, MultiInputPolicy
from lunar_sb3.soft_dqn.prioritized import (
    PrioritizedNStepReplayBuffer,
    PrioritizedReplayBuffer,
    PrioritizedReplayBufferSamples,
)

SelfSoftUpdateDQN = TypeVar("SelfSoftUpdateDQN", bound="SoftUpdateDQN")


class SoftUpdateDQN(DQN):
    """
    Deep Q-Learning with soft (Polyak) target updates, as taught in the "Deep Q-Learning - Lunar Lander" lab.

    The defaults *are* the lab: a 64-64 ReLU Q-network and target network, Adam with learning rate 1e-3,
    a replay memory of 100,000, gamma 0.995, minibatch 64, one gradient step on the MSE every C = 4
    environment steps, each followed by w⁻ ← τ·w + (1 − τ)·w⁻ with τ = 1e-3, and an ε-greedy policy whose ε
    starts at 1.0 and is multiplied by 0.995 after every episode, floored at 0.01.

    Unlike SB3's ``DQN`` (hard copy every ``target_update_interval`` steps, Huber loss, gradient clipping,
    linear ε schedule), this class updates the target softly every C transitions right after the gradient
    step, uses the MSE and does not clip, and decays ε per finished episode. All of those remain options.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, ...)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: Adam's learning rate (the lab: 1e-3), constant or a schedule of progress remaining
    :param buffer_size: size of the replay memory (the lab: 100,000)
    :param learning_starts: transitions to collect before learning; the lab learns once the memory holds more
        than a minibatch, i.e. more than 64
    :param batch_size: minibatch size of each gradient step (the lab: 64)
    :param tau: soft update coefficient τ in w⁻ ← τ·w + (1 − τ)·w⁻, in (0, 1] (the lab: 1e-3; 1 is a hard copy)
    :param gamma: the discount factor γ (the lab: 0.995)
    :param train_freq: update the model every ``train_freq`` vec-env steps (the lab: 4)
    :param gradient_steps: gradient steps per update (the lab: 1)
    :param replay_buffer_class: Replay buffer class to use; ``None`` selects SB3's default
    :param replay_buffer_kwargs: Keyword arguments to pass to the replay buffer on creation
    :param optimize_memory_usage: SB3's memory-efficient replay buffer variant
    :param n_steps: n-step returns (SB3's ``NStepReplayBuffer``); the lab uses 1
    :param target_update_interval: the lab's C: a soft target update every C transitions once learning has
        started, counted in transitions so that ``n_envs > 1`` keeps the meaning (the lab: 4)
    :param exploration_schedule: ``"episodic"`` (the lab: ε ← max(ε_final, decay·ε) after each finished episode)
        or ``"linear"`` (SB3's schedule over ``exploration_fraction`` of training)
    :param exploration_decay: per-episode multiplicative ε decay of the episodic schedule, in (0, 1] (the lab: 0.995)
    :param exploration_fraction: fraction of training over which the linear schedule goes from initial to final ε
    :param exploration_initial_eps: initial ε (the lab: 1.0)
    :param exploration_final_eps: floor of ε (the lab: 0.01)
    :param loss: ``"mse"`` (the lab) or ``"huber"`` (SB3's smooth L1)
    :param double_q: use the online network's argmax and the target network's value in the TD target (Double DQN)
    :param dueling: a dueling network (``DuelingDQNPolicy``): ``net_arch`` is the shared trunk, followed by a value
        head V (→ 1) and an advantage head A (→ n_actions), Q = V + A − mean A (both heads in one last Linear layer)
    :param prioritized_replay: proportional prioritized replay (Schaul et al. 2016,
        https://arxiv.org/abs/1511.05952): transitions are replayed with probability ∝ (|δ| + ε)^α, the loss is
        weighted by importance-sampling weights (N·P(i))^−β / max, and priorities are set to |δ| + ε after every
        gradient step (``PrioritizedReplayBuffer``; with ``n_steps > 1``, prioritized n-step replay)
    :param priority_alpha: α, how strongly priorities shape sampling (0: uniform); 0.6 as in the paper
    :param priority_beta0: β at the start of training, annealed linearly to 1 (full correction) at its end; 0.4
    :param priority_epsilon: ε added to |δ| so that no transition becomes unreachable
    :param max_grad_norm: clip the gradient norm to this value; ``None`` (the lab) does not clip
    :param use_fast_path: train on the compiled fast path where it implements the configuration (the same math as
        autograd, to float32 rounding; checked at every ``learn``; anything else falls back visibly, see
        ``fast_path_status``); ``False`` always uses SB3's loop and autograd
    :param stats_window_size: episodes averaged in the rollout logs (100, the lab's "solved" window)
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments for the policy; the default network is SB3's 64-64 ReLU MLP
    :param verbose: Verbosity level: 0 none, 1 info (says when training falls back to the general path), 2 debug
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "DuelingMlpPolicy": DuelingDQNPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }

    def __init__(
        self,
        policy: str | type[DQNPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        buffer_size: int = 100_000,
        learning_starts: int = 64,
        batch_size: int = 64,
        tau: float = 1e-3,
        gamma: float = 0.995,
        train_freq: int | tuple[int, str] = 4,
        gradient_steps: int = 1,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        target_update_interval: int = 4,
        exploration_schedule: str = "episodic",
        exploration_decay: float = 0.995,
        exploration_fraction: float = 0.1,
        exploration_initial_eps: float = 1.0,
        exploration_final_eps: float = 0.01,
        loss: str = "mse",
        double_q: bool = False,
        dueling: bool = False,
        prioritized_replay: bool = False,
        priority_alpha: float = 0.6,
        priority_beta0: float = 0.4,
        priority_epsilon: float = 1e-6,
        max_grad_norm: float | None = None,
        use_fast_path: bool = True,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        if isinstance(env, str):
            # SB3 would make it with render_mode="rgb_array", and LunarLander then simulates exhaust particles
            # that training never draws (about 2x slower). Pass a made env to train with rendering.
            env = gym.make(env)
        # Validate before SB3 builds envs and networks, so bad input fails fast and says why.
        check_hyperparameters(
            tau=tau,
            target_update_interval=target_update_interval,
            exploration_schedule=exploration_schedule,
            exploration_decay=exploration_decay,
            exploration_fraction=exploration_fraction,
            exploration_initial_eps=exploration_initial_eps,
            exploration_final_eps=exploration_final_eps,
            loss=loss,
            max_grad_norm=max_grad_norm,
            learning_rate=learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            n_steps=n_steps,
            switches=dict(
                optimize_memory_usage=optimize_memory_usage,
                double_q=double_q,
                dueling=dueling,
                prioritized_replay=prioritized_replay,
                use_fast_path=use_fast_path,
            ),
            policy_kwargs=policy_kwargs,
        )
        self.use_fast_path = use_fast_path
        if dueling and policy not in ("MlpPolicy", "DuelingMlpPolicy", MlpPolicy, DuelingDQNPolicy):
            raise ValueError(
                f"SoftUpdateDQN: dueling=True needs policy 'MlpPolicy' (got {policy!r}); "
                "another features extractor can be given through policy_kwargs"
            )
        if dueling:
            policy = DuelingDQNPolicy
        self.prioritized_replay = prioritized_replay
        self.priority_beta0 = priority_beta0
        if prioritized_replay:
            if replay_buffer_class is not None:
                raise ValueError(
                    f"SoftUpdateDQN: prioritized_replay=True brings its own replay buffer; "
                    f"replay_buffer_class={replay_buffer_class.__name__} cannot be used with it"
                )
            if not 0 <= priority_beta0 <= 1:
                raise ValueError(f"SoftUpdateDQN: priority_beta0={priority_beta0!r} is invalid; it must be in [0, 1]")
            replay_buffer_class = PrioritizedNStepReplayBuffer if n_steps > 1 else PrioritizedReplayBuffer
            n_step_kwargs = {"n_steps": n_steps, "gamma": gamma} if n_steps > 1 else {}
            replay_buffer_kwargs = {
                **(replay_buffer_kwargs or {}),
                "alpha": priority_alpha,
                "beta": priority_beta0,
                "priority_epsilon": priority_epsilon,
                **n_step_kwargs,
            }
        self.dueling = isinstance(policy, type) and issubclass(policy, DuelingDQNPolicy) or policy == "DuelingMlpPolicy"
        self.exploration_schedule_name = exploration_schedule
        self.exploration_decay = exploration_decay
        self.loss = loss
        self.double_q = double_q
        # Episodes finished over the model's whole life: the episodic ε is a function of this count, and it is
        # saved with the model so that resumed training continues the decay instead of restarting at 1.0.
        self.finished_episodes = 0
        # Soft target updates that fell due (every C transitions) since the last gradient step.
        self._due_target_updates = 0
        # Soft target updates applied so far (the C-cadence made visible, for tests and curious users).
        self.target_updates = 0
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps,
            target_update_interval=target_update_interval,
            exploration_fraction=exploration_fraction,
            exploration_initial_eps=exploration_initial_eps,
            exploration_final_eps=exploration_final_eps,
            max_grad_norm=max_grad_norm,  # type: ignore[arg-type]
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        self.exploration_rate = exploration_initial_eps
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        with warnings.catch_warnings():
            # DQN warns that n_envs > C updates the target once per vec-env step; here C counts transitions
            warnings.filterwarnings("ignore", message="The number of environments used is greater than the target")
            # prioritized n-step replay passes n_steps and gamma to its buffer itself
            warnings.filterwarnings(
                "ignore", message=r"`n_steps=\d+` is ignored because a custom `replay_buffer_class`"
            )
            super()._setup_model()
        self._use_fused_adam()
        self.exploration_rate = self._scheduled_exploration_rate()
        # Storage-sharing aliases, built once: collecting them per update costs more than the update itself
        self._polyak_pairs = (
            [p.data for p in self.q_net.parameters()],
            [p.data for p in self.q_net_target.parameters()],
        )
        self._fast_trainer = fast_path.FastTrainer.for_model(self)

    def _use_fused_adam(self) -> None:
        """Rebuild a default CPU Adam as ``Adam(fused=True)``: one kernel instead of a loop, same update rule.

        Done on the optimizer, not through ``policy_kwargs``, so the saved ``policy_kwargs`` stay what the user
        passed (and ``load(path, policy_kwargs=...)`` with them keeps working).
        """
        optimizer_kwargs = self.policy.optimizer_kwargs
        if (
            type(self.policy.optimizer) is th.optim.Adam
            and not ({"fused", "foreach"} & optimizer_kwargs.keys())
            and self.device.type == "cpu"
            and fast_path.HAS_FUSED_ADAM
        ):
            self.policy.optimizer = th.optim.Adam(
                self.policy.q_net.parameters(), lr=self.lr_schedule(1), **optimizer_kwargs, fused=True
            )

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: Any = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        # Decided where training starts, since `set_env` may have added a wrapper (e.g. VecNormalize) since setup
        self._fast_trainer = fast_path.FastTrainer.for_model(self)
        self.fast_path_compile_seconds = 0.0
        if self._fast_trainer is not None:
            self._compile_fast_path()
        why = fast_path.unsupported_reason(self)
        if self.verbose >= 2 or (self.verbose >= 1 and why is not None and self.use_fast_path):
            print(f"SoftUpdateDQN: training on the {'fast path' if why is None else f'general path ({why})'}")
        # Set by the zoo for `-i`: a resumed run keeps counting env steps (rl-zoo3 always resets them)
        reset_num_timesteps = reset_num_timesteps and not getattr(self, "_keep_step_counter", False)
        return super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)

    @classmethod
    def load(cls: type[SelfSoftUpdateDQN], path: Any, *args: Any, **kwargs: Any) -> SelfSoftUpdateDQN:  # type: ignore[override]
        """SB3's ``load``, after checking that the file holds a SoftUpdateDQN (one sentence otherwise)."""
        if isinstance(path, (str, os.PathLike)):
            check_soft_dqn_zip(path)
        return super().load(path, *args, **kwargs)

    def _compile_fast_path(self) -> None:
        """Compile (or load) the fast path's kernels here, before SB3's ``learn`` starts the callbacks' clocks.

        A failure (a Numba or LLVM problem) is not a crash: training falls back to the general path, and
        ``fast_path_status`` says why. The seconds it took are kept in ``fast_path_compile_seconds``.
        """
        if self.verbose >= 1 and not fast_path.FastTrainer.cache_is_warm():
            print("SoftUpdateDQN: compiling the training step (first run only, ~10 s)...", flush=True)
        try:
            self.fast_path_compile_seconds = self._fast_trainer.compile()
        except Exception as error:  # noqa: BLE001 - whatever Numba raises, the general path can still train
            fast_path.compile_error = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            self._fast_trainer = None

    @property
    def uses_fast_path(self) -> bool:
        """True when training uses the hand-derived gradients and the lean rollout loop (see ``fast_path``)."""
        return self._fast_trainer is not None

    @property
    def fast_path_status(self) -> str:
        """``"fast path"`` or ``"general path (<why>)"`` for the current configuration."""
        why = fast_path.unsupported_reason(self)
        return "fast path" if why is None else f"general path ({why})"

    def _excluded_save_params(self) -> list[str]:
        excluded = ["_fast_trainer", "_polyak_pairs", "_keep_step_counter", "fast_path_compile_seconds"]
        return [*super()._excluded_save_params(), *excluded]

    # ------------------------------------------------------------------ exploration
    def _scheduled_exploration_rate(self) -> float:
        """ε for the current state: the lab's per-episode decay, or SB3's linear schedule."""
        if self.exploration_schedule_name == "linear":
            return self.exploration_schedule(self._current_progress_remaining)
        # The lab: ε_k = max(ε_min, ε_0 · decay^k) after k finished episodes
        decayed = self.exploration_initial_eps * self.exploration_decay**self.finished_episodes
        return max(self.exploration_final_eps, decayed)

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None:
        # SB3 calls this once per vec-env step with the dones, before `_on_step`: the one place where
        # the plain rollout loop tells us which episodes just ended.
        super()._update_info_buffer(infos, dones)
        if dones is not None:
            self.finished_episodes += int(np.count_nonzero(dones))

    def _on_step(self) -> None:
        """Called after every vec-env step: schedule soft target updates and refresh ε."""
        self._n_calls += 1
        self._count_due_target_updates()
        self.exploration_rate = self._scheduled_exploration_rate()
        self.logger.record("rollout/exploration_rate", self.exploration_rate)

    # ------------------------------------------------------------------ target network
    def _count_due_target_updates(self) -> None:
        """One soft update is due at every multiple of C transitions past ``learning_starts``."""
        interval = self.target_update_interval
        previous = max(self.num_timesteps - self.n_envs, self.learning_starts)
        if self.num_timesteps > previous:
            self._due_target_updates += self.num_timesteps // interval - previous // interval

    def _apply_due_target_updates(self) -> None:
        """k due soft updates at once: w⁻ ← w⁻ + (1 − (1 − τ)ᵏ)·(w − w⁻), all parameters in one fused call.

        The online weights do not change between the k updates (they fall due between gradient steps), so
        k lerps with weight τ equal one lerp with weight 1 − (1 − τ)ᵏ.
        """
        k = self._due_target_updates
        if k == 0:
            return
        weight = self.tau if k == 1 else 1.0 - (1.0 - self.tau) ** k
        online, target = self._polyak_pairs
        # lerp(w⁻, w, α) = w⁻ + α·(w − w⁻) = α·w + (1 − α)·w⁻
        fast_path.lerp_all(target, online, weight)
        # Running statistics (e.g. batch norm) are copied, as SB3's DQN does
        for stat, stat_target in zip(self.batch_norm_stats, self.batch_norm_stats_target, strict=True):
            stat_target.copy_(stat)
        self.target_updates += k
        self._due_target_updates = 0

    # ------------------------------------------------------------------ learning
    def td_target(
        self, rewards: th.Tensor, next_observations: th.Tensor, dones: th.Tensor, discounts: th.Tensor | float
    ) -> th.Tensor:
        """y = r + γⁿ·max_a′ Q̂(s′, a′)·(1 − done); with ``double_q``, Q̂(s′, argmax_a′ Q(s′, a′)) instead."""
        with th.no_grad():
            next_q_target = self.q_net_target(next_observations)
            if self.double_q:
                next_actions = self.q_net(next_observations).argmax(dim=1, keepdim=True)
                next_q = next_q_target.gather(1, next_actions)
            else:
                next_q = next_q_target.max(dim=1, keepdim=True).values
            return rewards + (1 - dones) * discounts * next_q

    def collect_rollouts(  # type: ignore[override]
        self,
        env: VecEnv,
        callback: BaseCallback,
        train_freq: TrainFreq,
        replay_buffer: ReplayBuffer,
        action_noise: ActionNoise | None = None,
        learning_starts: int = 0,
        log_interval: int | None = None,
    ) -> RolloutReturn:
        if replay_buffer is self.replay_buffer and fast_rollout.covers(self, train_freq):
            return fast_rollout.collect_rollouts(self, env, callback, train_freq, learning_starts, log_interval)
        return super().collect_rollouts(
            env, callback, train_freq, replay_buffer, action_noise, learning_starts, log_interval
        )

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self._update_learning_rate(self.policy.optimizer)
        if isinstance(self.replay_buffer, PrioritizedReplayBuffer):
            # β annealed linearly from priority_beta0 to 1 over training: full correction by the end
            # (progress can pass the end by one vec-env step, hence the clip)
            elapsed = min(1.0, 1.0 - self._current_progress_remaining)
            self.replay_buffer.beta = self.priority_beta0 + (1.0 - self.priority_beta0) * elapsed
        if self._fast_trainer is not None:  # allow-listed at learn start; a Linear/ReLU stack has no train mode
            loss_sum = self._fast_trainer.train(gradient_steps, batch_size)
        else:
            self.policy.set_training_mode(True)
            loss_sum = self._train_general(gradient_steps, batch_size)
        self._n_updates += gradient_steps
        self._apply_due_target_updates()
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", loss_sum / max(gradient_steps, 1))

    def td_loss(self, batch: ReplayBufferSamples) -> th.Tensor:
        """MSE (or Huber) between Q(s, a) and the TD target, averaged over the minibatch."""
        return self.td_loss_and_errors(batch)[0]

    def td_loss_and_errors(self, batch: ReplayBufferSamples) -> tuple[th.Tensor, th.Tensor]:
        """The loss and the TD errors δ = Q(s, a) − y (what prioritized replay turns into priorities)."""
        # n-step replay stores γⁿ per sample (shorter at episode ends); 1-step uses γ
        discounts = batch.discounts if batch.discounts is not None else self.gamma
        target_q = self.td_target(batch.rewards, batch.next_observations, batch.dones, discounts)
        # Q(s, a) for the actions that were taken
        current_q = self.q_net(batch.observations).gather(1, batch.actions.long())
        weights = getattr(batch, "weights", None)
        if weights is None:
            loss = LOSSES[self.loss](current_q, target_q)
        else:  # prioritized replay: mean of w_i · loss_i, the importance-sampling correction
            loss = (weights * LOSSES[self.loss](current_q, target_q, reduction="none")).mean()
        return loss, (current_q - target_q).detach()

    def _train_general(self, gradient_steps: int, batch_size: int) -> float:
        """The plain autograd path: works for any policy, replay buffer and optimizer."""
        loss_sum = th.zeros((), device=self.device)
        for _ in range(gradient_steps):
            batch = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            loss, td_errors = self.td_loss_and_errors(batch)
            loss_sum += loss.detach()

            self.policy.optimizer.zero_grad()
            loss.backward()
            if self.max_grad_norm is not None:
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
            if isinstance(batch, PrioritizedReplayBufferSamples):  # new priority |δ| + ε for what was replayed
                self.replay_buffer.update_priorities(batch.indices, td_errors)  # type: ignore[union-attr]
        return float(loss_sum)
