"""Every private entry point lunar_sb3 relies on exists in the installed versions (CI: newest and lowest)."""

import pytest

from lunar_sb3 import private_api


@pytest.mark.parametrize("name", sorted(private_api.REQUIRED))
def test_required_entry_point_exists(name: str) -> None:
    assert private_api.missing({name: ""}) == []


@pytest.mark.parametrize("name", sorted(private_api.OPTIONAL))
def test_optional_entry_point_exists_or_is_skipped(name: str) -> None:
    if private_api.missing({name: ""}):
        pytest.skip(f"{name} is missing from this torch: the fast path falls back (its own tests cover that)")


def test_a_missing_entry_point_is_named_with_the_installed_version(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    monkeypatch.setitem(private_api.REQUIRED, "rl_zoo3.exp_manager.ExperimentManager.gone_in_3_0", "a wrapper")
    with pytest.raises(ImportError) as raised:
        private_api.check_required("rl_zoo3")
    message = str(raised.value)
    assert "rl_zoo3.exp_manager.ExperimentManager.gone_in_3_0 (a wrapper)" in message
    assert f"rl_zoo3 {metadata.version('rl_zoo3')} does not have" in message


def test_the_zoo_glue_checks_before_registering(monkeypatch: pytest.MonkeyPatch) -> None:
    import lunar_sb3.zoo

    monkeypatch.setitem(private_api.REQUIRED, "rl_zoo3.utils.NO_SUCH_REGISTRY", "--algo soft_dqn")
    with pytest.raises(ImportError, match="NO_SUCH_REGISTRY"):
        lunar_sb3.zoo.register()
