"""Policies of SoftUpdateDQN: SB3's ``DQNPolicy`` (the lab's network) and a dueling variant.

Dueling networks (Wang et al., 2016, https://arxiv.org/abs/1511.06581) split the Q-network after a shared trunk
into a state value V(s) and action advantages A(s, a), recombined as Q(s, a) = V(s) + A(s, a) − mean_a′ A(s, a′).
Subtracting the mean makes V and A identifiable and lets every update of any action move V, which is what helps
in states where the action hardly matters (a lander drifting high above the pad).
"""

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, create_mlp
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.dqn.policies import CnnPolicy, DQNPolicy, MlpPolicy, MultiInputPolicy, QNetwork
from torch import nn

__all__ = ["CnnPolicy", "DuelingDQNPolicy", "DuelingQNetwork", "MlpPolicy", "MultiInputPolicy"]


class DuelingQNetwork(QNetwork):
    """Q(s, a) = V(s) + A(s, a) − mean_a′ A(s, a′) on a shared trunk.

    ``net_arch`` is the trunk (hidden layers, each followed by ``activation_fn``); the heads are one linear layer
    each: ``value_head`` (hidden → 1) and ``advantage_head`` (hidden → n_actions). The lab's ``[64, 64]`` thus
    becomes 8 → 64 → 64, then V: 64 → 1 and A: 64 → 4.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
    ) -> None:
        # QNetwork.__init__ would build a plain head; start from BasePolicy and build the dueling one instead
        BasePolicy.__init__(
            self,
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
        )
        self.net_arch = [64, 64] if net_arch is None else net_arch
        self.activation_fn = activation_fn
        self.features_dim = features_dim
        self.trunk = nn.Sequential(*create_mlp(features_dim, -1, self.net_arch, activation_fn))
        hidden_dim = self.net_arch[-1] if self.net_arch else features_dim
        self.value_head = nn.Linear(hidden_dim, 1)
        self.advantage_head = nn.Linear(hidden_dim, int(action_space.n))

    def forward(self, obs: PyTorchObs) -> th.Tensor:
        hidden = self.trunk(self.extract_features(obs, self.features_extractor))
        advantages = self.advantage_head(hidden)
        # Q = V + A − mean_a′ A: the mean keeps V and A identifiable
        return self.value_head(hidden) + advantages - advantages.mean(dim=1, keepdim=True)


class DuelingDQNPolicy(DQNPolicy):
    """SB3's ``DQNPolicy`` with :class:`DuelingQNetwork` as Q-network and target network."""

    def make_q_net(self) -> DuelingQNetwork:
        net_args: dict[str, Any] = self._update_features_extractor(self.net_args, features_extractor=None)
        return DuelingQNetwork(**net_args).to(self.device)


DuelingMlpPolicy = DuelingDQNPolicy
