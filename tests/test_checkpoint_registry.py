"""The model registry: built-in oracles, shipped and user models, paths and name validation."""

from __future__ import annotations

import pytest

from dfst import registry
from dfst.checkpoint import CheckpointError, save_checkpoint
from dfst.experts import get_expert
from dfst.oracle import oracle_weights
from dfst.registry import (
    SHIPPED_DIR,
    InvalidModelNameError,
    ModelNotFoundError,
    default_model_name,
    list_models,
    load_model,
    save_user_model,
)
from dfst.rollout import run_rollout


@pytest.fixture(autouse=True)
def user_registry(tmp_path, monkeypatch):
    folder = tmp_path / "user-models"
    monkeypatch.setenv("DFST_MODEL_DIR", str(folder))
    return folder


def test_oracle_builtin_loads(task):
    weights, metadata = load_model(f"oracle-{task}")
    assert weights.sha256() == oracle_weights(get_expert(task)).sha256()
    assert metadata["source"] == "builtin"
    assert metadata["task"] == task
    assert metadata["path"] is None


@pytest.mark.parametrize("task", ["add2", "add10", "mult2", "mult10"])
def test_shipped_model_is_default_and_correct(task):
    assert default_model_name(task) == task
    weights, metadata = load_model(task)
    assert metadata["source"] == "shipped"
    assert metadata["task"] == task
    assert metadata["expert_table_hash"] == get_expert(task).table_hash
    radix = get_expert(task).alphabet.radix
    a, b = radix**12 - 1, radix**7 + 3
    assert run_rollout(weights, task, a, b).outcome == "correct"


def test_shipped_files_have_model_cards():
    for checkpoint in SHIPPED_DIR.glob("*.safetensors"):
        assert checkpoint.with_suffix(".json").is_file()
        assert checkpoint.with_suffix(".md").is_file()


def test_default_for_unshipped_task_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "SHIPPED_DIR", tmp_path)
    with pytest.raises(ModelNotFoundError, match="no shipped model"):
        default_model_name("mult10")


def test_user_model_round_trip(user_registry):
    weights = oracle_weights(get_expert("add2"))
    path = save_user_model("my-add2_v1.0", weights, {"task": "add2"})
    assert path.parent == user_registry
    loaded, metadata = load_model("my-add2_v1.0")
    assert loaded.sha256() == weights.sha256()
    assert metadata["source"] == "user"
    entries = {m["name"]: m for m in list_models()}
    assert entries["my-add2_v1.0"]["source"] == "user"
    assert entries["my-add2_v1.0"]["sha256"] == weights.sha256()
    assert entries["add10"]["source"] == "shipped"
    assert entries["oracle-add10"]["source"] == "builtin"


def test_explicit_path_loads(tmp_path):
    path = save_checkpoint(tmp_path / "elsewhere.safetensors", oracle_weights(get_expert("add2")), {"task": "add2"})
    _, metadata = load_model(str(path))
    assert metadata["source"] == "file"
    assert metadata["path"] == str(path)


def test_unknown_name_lists_known():
    with pytest.raises(ModelNotFoundError) as error:
        load_model("add3")
    assert "add10" in str(error.value)
    assert "oracle-add2" in str(error.value)


@pytest.mark.parametrize("name", ["..", ".hidden", "a" * 65, "sp ace", "-x", "", "a\\b"])
def test_invalid_names_rejected(name):
    with pytest.raises((InvalidModelNameError, ModelNotFoundError)):
        load_model(name)


@pytest.mark.parametrize("name", ["../outside", "../../etc/passwd", "/etc/passwd"])
def test_traversal_names_are_paths_not_registry_names(name):
    # names with a separator are treated as explicit paths and must exist as checkpoints
    with pytest.raises((ModelNotFoundError, CheckpointError)):
        load_model(name)


def test_symlink_out_of_registry_ignored(user_registry, tmp_path):
    outside = save_checkpoint(tmp_path / "outside.safetensors", oracle_weights(get_expert("add2")), {"task": "add2"})
    user_registry.mkdir(parents=True)
    (user_registry / "sneaky.safetensors").symlink_to(outside)
    (user_registry / "sneaky.json").symlink_to(outside.with_suffix(".json"))
    with pytest.raises(ModelNotFoundError):
        load_model("sneaky")
    assert "sneaky" not in {m["name"] for m in list_models()}


def test_reserved_oracle_prefix_rejected():
    with pytest.raises(InvalidModelNameError, match="reserved"):
        save_user_model("oracle-add2", oracle_weights(get_expert("add2")), {"task": "add2"})


def test_broken_user_model_skipped_in_list(user_registry):
    user_registry.mkdir(parents=True)
    (user_registry / "broken.safetensors").write_bytes(b"junk")
    (user_registry / "broken.json").write_text("{not json")
    assert "broken" not in {m["name"] for m in list_models()}
    with pytest.raises(CheckpointError):
        load_model("broken")


def test_list_models_reports_shapes():
    from dfst import registry
    from dfst.weights import count_parameters

    entries = {entry["name"]: entry for entry in registry.list_models()}
    shipped, _ = registry.load_model("add10")
    assert entries["add10"]["hidden_dim"] == shipped.hidden_dim
    assert entries["add10"]["parameters"] == shipped.num_parameters
    assert shipped.num_parameters == count_parameters(12, shipped.hidden_dim)
    assert entries["oracle-add10"]["hidden_dim"] == 19
    assert entries["oracle-add10"]["parameters"] == 8227
