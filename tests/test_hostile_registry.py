"""Model names and paths: no name reaches a file outside its registry folder."""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dfst import registry
from dfst.experts import get_expert
from dfst.oracle import oracle_weights
from dfst.registry import InvalidModelNameError, ModelNotFoundError

TASK = "add2"
TRAVERSAL_NAMES = [
    "..", "../outside", "../../outside", "..\\outside", "sub/../../outside", "outside/", ".outside", "-rf",
    "outside\n", "outside\x00", "a" * 65, "", " outside", "outside ", "ÿoutside", "outside\u2215x",
]


@pytest.fixture
def folders(tmp_path, monkeypatch) -> tuple[pathlib.Path, pathlib.Path]:
    """A user registry folder and, next to it, a folder with a valid model named "outside"."""
    user = tmp_path / "registry"
    user.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    weights = oracle_weights(get_expert(TASK))
    registry.save_checkpoint(outside / "outside.safetensors", weights, {"task": TASK})
    registry.save_checkpoint(tmp_path / "outside.safetensors", weights, {"task": TASK})
    monkeypatch.setenv(registry.USER_DIR_VARIABLE, str(user))
    return user, outside


@pytest.mark.parametrize("name", TRAVERSAL_NAMES)
def test_traversal_name_not_loaded(folders, name):
    with pytest.raises((InvalidModelNameError, ModelNotFoundError)):
        registry.load_model(name)


@pytest.mark.parametrize("name", TRAVERSAL_NAMES)
def test_traversal_name_not_saved(folders, tmp_path, name):
    weights = oracle_weights(get_expert(TASK))
    before = sorted(str(path) for path in tmp_path.rglob("*"))
    with pytest.raises(InvalidModelNameError):
        registry.save_user_model(name, weights, {"task": TASK})
    assert sorted(str(path) for path in tmp_path.rglob("*")) == before


@given(name=st.text(max_size=70))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_valid_names_stay_inside(folders, name):
    """Any name that validate_name accepts maps to a direct child of the registry folder."""
    user, _ = folders
    try:
        registry.validate_name(name)
    except InvalidModelNameError:
        return
    candidate = (user / f"{name}{registry.SUFFIX}").resolve()
    assert candidate.parent == user.resolve()
    assert "/" not in name
    assert "\n" not in name


def test_symlink_out_of_registry_ignored(folders):
    user, outside = folders
    (user / "linked.safetensors").symlink_to(outside / "outside.safetensors")
    (user / "linked.json").symlink_to(outside / "outside.json")
    with pytest.raises(ModelNotFoundError):
        registry.load_model("linked")
    assert "linked" not in [model["name"] for model in registry.list_models()]


def test_unknown_name_lists_known_names(folders):
    with pytest.raises(ModelNotFoundError) as caught:
        registry.load_model("no-such-model")
    assert "oracle-add2" in str(caught.value)


def test_oracle_name_reserved(folders):
    with pytest.raises(InvalidModelNameError):
        registry.save_user_model("oracle-add2", oracle_weights(get_expert(TASK)), {"task": TASK})
