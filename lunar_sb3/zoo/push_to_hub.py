"""Let ``python -m rl_zoo3.push_to_hub`` import again with huggingface_sb3 3.x (for every ``--algo``)."""

import importlib
from typing import Any


def provide_generate_metadata() -> None:
    """Add huggingface_sb3's old ``generate_metadata`` where only its 3.x rename exists.

    rl-zoo3 2.9 imports ``generate_metadata`` from ``huggingface_sb3.push_to_hub``, which huggingface_sb3 3.x renamed
    ``_generate_metadata`` (returning a ``ModelCardData`` instead of the dict rl-zoo3 passes to ``metadata_save``),
    so the script stops with an ImportError before it parses its arguments. The old name comes back as a wrapper
    that returns the dict; nothing is changed where the old name exists. rl-zoo3 already imports the module.
    """
    try:
        module = importlib.import_module("huggingface_sb3.push_to_hub")
    except ImportError:
        return
    renamed = getattr(module, "_generate_metadata", None)
    if hasattr(module, "generate_metadata") or renamed is None:
        return

    def generate_metadata(model_name: str, env_id: str, mean_reward: float, std_reward: float) -> dict[str, Any]:
        return renamed(model_name, env_id, mean_reward, std_reward).to_dict()

    module.generate_metadata = generate_metadata
