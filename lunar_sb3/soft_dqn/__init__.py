from lunar_sb3.soft_dqn.soft_dqn import SoftUpdateDQN

__all__ = ["SoftUpdateDQN"]
