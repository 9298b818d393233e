"""Share a lander: a Hub package with a landing model card (``package``/``push``), its way back into rl-zoo3's
folder layout (``pull``), and the lander that ships with lunar_sb3 (``shipped_agents_folder``)."""

from lunar_sb3.hub.files import model_file_name, write_model_for_inference
from lunar_sb3.hub.package import build_package
from lunar_sb3.hub.pull import pull_package, shipped_agents_folder

__all__ = ["build_package", "model_file_name", "pull_package", "shipped_agents_folder", "write_model_for_inference"]
