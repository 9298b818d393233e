"""Interpreter start-up hook: registers ``soft_dqn`` with rl-zoo3 the moment rl-zoo3 is imported.

rl-zoo3 has no plugin entry point and builds its ``--algo`` choices as soon as its scripts start, so the
registration must already be armed when Python starts. The wheel ships this file as the top-level module
``_lunar_sb3_autoload`` plus ``lunar_sb3_autoload.pth`` (and, for Python >= 3.15, ``lunar_sb3_autoload.start``)
that call :func:`install` at start-up.

It runs in every interpreter of the environment, so it imports nothing beyond ``sys``/``os``, does nothing
until ``rl_zoo3`` itself is imported, and never raises. ``LUNAR_SB3_AUTOLOAD=0`` turns it off.
"""

import os
import sys

_ENV_SWITCH = "LUNAR_SB3_AUTOLOAD"
_TRIGGER = "rl_zoo3"


def _register_with_zoo() -> None:
    try:
        import lunar_sb3.zoo  # noqa: F401  (registers on import)
    except Exception as exc:  # a broken hook must never break the user's program
        import warnings

        warnings.warn(
            f"lunar_sb3 could not register 'soft_dqn' with rl-zoo3 ({type(exc).__name__}: {exc}). "
            "Run with --gym-packages lunar_sb3.zoo, or set LUNAR_SB3_AUTOLOAD=0 to silence this.",
            RuntimeWarning,
            stacklevel=2,
        )


class _LoaderThatRegisters:
    """Runs the real loader, puts it back on the module, then registers."""

    def __init__(self, loader: object) -> None:
        self._loader = loader

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        return self._loader.create_module(spec)  # type: ignore[attr-defined]

    def exec_module(self, module) -> None:  # type: ignore[no-untyped-def]
        module.__loader__ = module.__spec__.loader = self._loader
        self._loader.exec_module(module)  # type: ignore[attr-defined]
        _register_with_zoo()


class _ZooImportWatcher:
    """A ``sys.meta_path`` finder that only looks at ``rl_zoo3`` and lets the other finders find it."""

    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if fullname != _TRIGGER:
            return None
        sys.meta_path.remove(self)  # one shot: no recursion, nothing left behind afterwards
        try:
            import importlib.util

            spec = importlib.util.find_spec(fullname)
        except Exception:
            return None
        if spec is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _LoaderThatRegisters(spec.loader)
        return spec


def install() -> None:
    """Arm the hook (idempotent). Entry point of the ``.pth`` and ``.start`` files."""
    try:
        if os.environ.get(_ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
            return
        if _TRIGGER in sys.modules:
            _register_with_zoo()
        elif not any(isinstance(finder, _ZooImportWatcher) for finder in sys.meta_path):
            sys.meta_path.insert(0, _ZooImportWatcher())
    except Exception:
        pass
