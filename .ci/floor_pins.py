"""The floor environment's pins, derived from pyproject.toml so they cannot drift from what it declares.

``python .ci/floor_pins.py``        one requirement a line: each dependency with a lower bound pinned to exactly it
``python .ci/floor_pins.py test-tools``  the test extra's requirements of ``TEST_TOOLS`` (what the core tests need)
``python .ci/floor_pins.py check``  the installed version of each pinned package beside its pin; exit 1 on a mismatch

torch is the one exception: the only CPU wheel this CI can install is ``CI_TORCH``, so the floor environment runs
that instead of the declared floor (docs/development.md says what that leaves untested).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
CI_TORCH = "2.13.0"
"""The torch CI installs in both environments (an unpinned or older torch would pull GBs of CUDA packages)."""
LOWER_BOUND_OPERATORS = (">=", "~=", "==")
TEST_TOOLS = ("pytest", "pytest-xdist", "moviepy")
"""What the core tests need beyond the dependencies (moviepy: rl-zoo3's record_video); not the whole test extra."""


def _project(pyproject: Path) -> dict:
    with pyproject.open("rb") as file:
        return tomllib.load(file)["project"]


def declared_dependencies(pyproject: Path = PYPROJECT) -> list[Requirement]:
    """``[project] dependencies`` of pyproject.toml, parsed."""
    return [Requirement(text) for text in _project(pyproject)["dependencies"]]


def test_tools(pyproject: Path = PYPROJECT) -> list[Requirement]:
    """The test extra's requirements of the ``TEST_TOOLS`` packages, as declared there."""
    extra = [Requirement(text) for text in _project(pyproject)["optional-dependencies"]["test"]]
    tools = [requirement for requirement in extra if canonicalize_name(requirement.name) in TEST_TOOLS]
    missing = set(TEST_TOOLS) - {canonicalize_name(requirement.name) for requirement in tools}
    if missing:
        raise ValueError(f"the test extra does not list {', '.join(sorted(missing))}")
    return tools


def lower_bound(requirement: Requirement) -> str | None:
    """The declared lowest version (``>=2.7`` -> ``2.7``), or None for a dependency without one."""
    bounds = [spec.version for spec in requirement.specifier if spec.operator in LOWER_BOUND_OPERATORS]
    if len(bounds) > 1:
        raise ValueError(f"{requirement}: more than one lower bound")
    return bounds[0] if bounds else None


def floor_pins(requirements: list[Requirement]) -> dict[str, str]:
    """Canonical name -> the pip requirement that installs exactly its floor (torch: ``CI_TORCH``).

    Dependencies without a lower bound are left out: the resolver picks them, as it would for a user.
    """
    pins = {}
    for requirement in requirements:
        floor = lower_bound(requirement)
        if floor is None:
            continue
        name = canonicalize_name(requirement.name)
        version = CI_TORCH if name == "torch" else floor
        extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        marker = f"; {requirement.marker}" if requirement.marker else ""
        pins[name] = f"{requirement.name}{extras}=={version}{marker}"
    return pins


def check_installed(
    pins: dict[str, str], version_of: Callable[[str], str] = metadata.version
) -> tuple[list[str], list[str]]:
    """One line per pinned package (``name pinned installed``), and the packages whose version differs."""
    lines, wrong = [], []
    for name, pin in pins.items():
        requirement = Requirement(pin)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        pinned = next(iter(requirement.specifier)).version
        try:
            installed = version_of(name)
        except metadata.PackageNotFoundError:
            installed = "missing"
        lines.append(f"{name:<20} pinned {pinned:<10} installed {installed}")
        # public: torch's CPU wheel is 2.13.0+cpu; Version: a floor declared as 2.7 is installed as 2.7.0
        if installed == "missing" or Version(Version(installed).public) != Version(pinned):
            wrong.append(f"{name} {installed} (pinned {pinned})")
    return lines, wrong


def main(argv: list[str]) -> None:
    pins = floor_pins(declared_dependencies())
    if argv[1:] == ["check"]:
        lines, wrong = check_installed(pins)
        print("\n".join(lines))
        if wrong:
            raise SystemExit("the environment differs from the floor pins: " + ", ".join(wrong))
    elif argv[1:] == ["test-tools"]:
        print("\n".join(str(requirement) for requirement in test_tools()))
    elif not argv[1:]:
        print("\n".join(pins.values()))
    else:
        raise SystemExit(f"usage: {argv[0]} [check | test-tools]")


if __name__ == "__main__":
    main(sys.argv)
