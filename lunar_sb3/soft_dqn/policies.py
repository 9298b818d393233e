"""Policies of SoftUpdateDQN: SB3's ``DQNPolicy`` (the lab's network) and a dueling variant.

Dueling networks (Wang et al., 2016, https://arxiv.org/abs/1511.06581) split the Q-network after a shared trunk
into a state value V(s) and action advantages A(s, a), recombined as Q(s, a) = V(s) + A(s, a) − mean_a′ A(s, a′).
Subtracting the mean makes V and A identifiable and lets every update of any action move V, which is what helps
in states where the action hardly matters (a lander drifting high above the pad).
"""

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, create_mlp
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.dqn.policies import CnnPolicy, DQNPolicy, MlpPolicy, MultiInputPolicy, QNetwork
from torch import nn

__all__ = ["CnnPolicy", "DuelingDQNPolicy", "DuelingQNetwork", "MlpPolicy", "MultiInputPolicy"]


class DuelingQNetwork(QNetwork):
    """Q(s, a) = V(s) + A(s, a) − mean_a′ A(s, a′) on a shared trunk.

    ``net_arch`` is the trunk (hidden layers, each followed by ``activation_fn``). The two heads are linear maps
    of the trunk's output stored as one ``nn.Linear`` with 1 + n_actions outputs, the last layer of ``q_net``:
    output 0 is the value head V(s), outputs 1..n_actions the advantage head A(s, ·) (:meth:`value_and_advantages`
    splits them). The rows are independent parameters, so this is exactly two heads; storing them together keeps
    ``q_net`` a plain Linear/ReLU stack, which is what the fast path trains. The lab's ``[64, 64]`` thus becomes
    8 → 64 → 64 → (1 + 4).
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
        super().__init__(
            observation_space, action_space, features_extractor, features_dim, net_arch, activation_fn, normalize_images
        )
        # QNetwork built q_net with one output per action; the dueling stack has one more, V
        heads = 1 + int(action_space.n)
        self.q_net = nn.Sequential(*create_mlp(self.features_dim, heads, self.net_arch, self.activation_fn))

    def value_and_advantages(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """V(s) ([batch, 1]) and A(s, ·) ([batch, n_actions])."""
        heads = self.q_net(self.extract_features(obs, self.features_extractor))
        return heads[:, :1], heads[:, 1:]

    def forward(self, obs: PyTorchObs) -> th.Tensor:
        value, advantages = self.value_and_advantages(obs)
        # Q = V + A − mean_a′ A: the mean keeps V and A identifiable
        return value + advantages - advantages.mean(dim=1, keepdim=True)


class DuelingDQNPolicy(DQNPolicy):
    """SB3's ``DQNPolicy`` with :class:`DuelingQNetwork` as Q-network and target network."""

    def make_q_net(self) -> DuelingQNetwork:
        net_args: dict[str, Any] = self._update_features_extractor(self.net_args, features_extractor=None)
        return DuelingQNetwork(**net_args).to(self.device)


DuelingMlpPolicy = DuelingDQNPolicy
