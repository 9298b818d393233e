"""The declared dependency ranges and the floor environment that proves their lower ends (``.ci/floors``).

The floor environment is only as good as its pins: they are derived from pyproject.toml by ``.ci/floor_pins.py``,
so these tests check the derivation against hand-written answers, that every range has both ends, and that
``.ci/floors`` installs those pins and runs test files that exist.
"""

from __future__ import annotations

import importlib.util
import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

if importlib.util.find_spec("tomllib") is None and importlib.util.find_spec("tomli") is None:
    pytest.skip("reading pyproject.toml needs tomllib (Python 3.11+) or tomli", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
FLOORS_SCRIPT = ROOT / ".ci" / "floors"

# The packages whose floors the issue asked to declare and prove, and NumPy, which numba's floor constrains
BOUNDED = {"stable-baselines3", "sb3-contrib", "rl-zoo3", "gymnasium", "torch", "numba", "numpy", "optuna"}


def _load_floor_pins():
    spec = importlib.util.spec_from_file_location("floor_pins", ROOT / ".ci" / "floor_pins.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


floor_pins = _load_floor_pins()


def test_pins_are_the_lower_bounds_with_extras_and_the_ci_torch() -> None:
    requirements = [
        Requirement(text)
        for text in ["stable-baselines3>=2.7,<3", "gymnasium[box2d]>=1.0,<2", "torch>=2.4,<3", "rich", "numba~=0.60"]
    ]
    assert floor_pins.floor_pins(requirements) == {
        "stable-baselines3": "stable-baselines3==2.7",
        "gymnasium": "gymnasium[box2d]==1.0",
        "torch": f"torch=={floor_pins.CI_TORCH}",
        "numba": "numba==0.60",
    }


def test_two_lower_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="more than one lower bound"):
        floor_pins.floor_pins([Requirement("numpy>=1.26,>=2.0")])


def test_every_bounded_package_has_a_floor_and_an_upper_bound_at_a_major_version() -> None:
    declared = {canonicalize_name(r.name): r for r in floor_pins.declared_dependencies()}
    assert BOUNDED <= declared.keys()
    for name in BOUNDED:
        requirement = declared[name]
        floor = Version(floor_pins.lower_bound(requirement))
        uppers = [Version(spec.version) for spec in requirement.specifier if spec.operator == "<"]
        assert len(uppers) == 1, f"{requirement}: one '<' upper bound expected"
        assert uppers[0] > floor, requirement
        # "<3", not "<2.9": the bound stops before the next major release, not at some minor one
        assert all(part == 0 for part in uppers[0].release[1:]), f"{requirement}: the upper bound is not a major"


def test_the_floor_pins_cover_every_declared_lower_bound_exactly() -> None:
    declared = floor_pins.declared_dependencies()
    pins = floor_pins.floor_pins(declared)
    with_floor = {canonicalize_name(r.name): r for r in declared if floor_pins.lower_bound(r) is not None}
    assert pins.keys() == with_floor.keys()
    for name, pin in pins.items():
        pinned = Requirement(pin)
        assert pinned.extras == with_floor[name].extras  # gymnasium[box2d]: the floor env installs Box2D too
        (spec,) = pinned.specifier
        expected = floor_pins.CI_TORCH if name == "torch" else floor_pins.lower_bound(with_floor[name])
        assert (spec.operator, spec.version) == ("==", expected)
        assert with_floor[name].specifier.contains(spec.version), f"{pin} lies outside {with_floor[name]}"


def test_check_compares_versions_not_strings() -> None:
    """A floor declared as 2.7 is installed as 2.7.0, torch's CPU wheel as 2.13.0+cpu: both match; 0.61 does not."""
    installed = {"stable-baselines3": "2.7.0", "torch": "2.13.0+cpu", "numba": "0.61.0"}

    def version_of(name: str) -> str:
        if name not in installed:
            raise metadata.PackageNotFoundError(name)
        return installed[name]

    pins = {
        "stable-baselines3": "stable-baselines3==2.7",
        "torch": "torch==2.13.0",
        "numba": "numba==0.60",
        "optuna": "optuna==4.0",
    }
    lines, wrong = floor_pins.check_installed(pins, version_of)
    assert wrong == ["numba 0.61.0 (pinned 0.60)", "optuna missing (pinned 4.0)"]
    assert [line.split() for line in lines] == [
        ["stable-baselines3", "pinned", "2.7", "installed", "2.7.0"],
        ["torch", "pinned", "2.13.0", "installed", "2.13.0+cpu"],
        ["numba", "pinned", "0.60", "installed", "0.61.0"],
        ["optuna", "pinned", "4.0", "installed", "missing"],
    ]


def test_the_core_tests_need_only_the_declared_test_tools() -> None:
    assert {canonicalize_name(r.name) for r in floor_pins.test_tools()} == set(floor_pins.TEST_TOOLS)


def test_ci_floors_installs_the_derived_pins_and_runs_existing_test_files() -> None:
    script = FLOORS_SCRIPT.read_text()
    assert "python .ci/floor_pins.py)" in script and '"${pins[@]}"' in script
    assert "python .ci/floor_pins.py check" in script
    core = re.search(r"CORE_TESTS=\((.*?)\)", script, re.S)
    assert core is not None
    files = core[1].split()
    assert files, "no core tests named"
    missing = [name for name in files if not (ROOT / name).is_file()]
    assert not missing, f".ci/floors names test files that do not exist: {missing}"
    assert "tests/test_floors.py" not in files  # this file checks pins, not behaviour at the floor


def test_ci_run_runs_the_floor_step_before_the_main_tests() -> None:
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert "bash .ci/floors" in lines
    assert lines.index("bash .ci/floors") < len(lines) - 1
