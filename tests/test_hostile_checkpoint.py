"""Malformed and malicious checkpoint files: each is rejected with CheckpointError and nothing is unpickled."""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from dfst.checkpoint import MAX_CHECKPOINT_BYTES, MAX_METADATA_BYTES, CheckpointError, load_checkpoint, save_checkpoint
from dfst.experts import get_expert
from dfst.oracle import oracle_weights

TASK = "add2"
HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class _WriteMarker:
    """Pickles to a call of pathlib.Path.touch, so unpickling it creates the marker file."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture
def checkpoint(tmp_path) -> pathlib.Path:
    """A valid add2 checkpoint with the oracle weights."""
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, oracle_weights(get_expert(TASK)), {"task": TASK})
    return path


def _tensors() -> dict[str, np.ndarray]:
    weights = oracle_weights(get_expert(TASK))
    return {"A": weights.A, "B": weights.B, "C": weights.C, "h0": weights.h0}


def _write_tensors(path: pathlib.Path, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    save_file({name: np.ascontiguousarray(value) for name, value in tensors.items()}, str(path))
    path.with_suffix(".json").write_text(json.dumps(metadata or {"task": TASK}))


def test_valid_checkpoint_loads(checkpoint):
    weights, metadata = load_checkpoint(checkpoint)
    assert weights.sha256() == oracle_weights(get_expert(TASK)).sha256()
    assert metadata["task"] == TASK


def test_missing_file_rejected(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_directory_rejected(tmp_path):
    folder = tmp_path / "folder.safetensors"
    folder.mkdir()
    with pytest.raises(CheckpointError):
        load_checkpoint(folder)


@HYPOTHESIS
@given(fraction=st.floats(min_value=0.0, max_value=0.999))
def test_truncated_file_rejected(checkpoint, fraction):
    data = checkpoint.read_bytes()
    truncated = checkpoint.with_name("truncated.safetensors")
    truncated.write_bytes(data[: int(len(data) * fraction)])
    truncated.with_suffix(".json").write_bytes(checkpoint.with_suffix(".json").read_bytes())
    with pytest.raises(CheckpointError):
        load_checkpoint(truncated)


@HYPOTHESIS
@given(data=st.data())
def test_flipped_bytes_rejected_or_identical(checkpoint, data):
    """A corrupted file either fails with CheckpointError or still yields exactly the saved weights."""
    original = checkpoint.read_bytes()
    position = data.draw(st.integers(min_value=0, max_value=len(original) - 1))
    value = data.draw(st.integers(min_value=0, max_value=255).filter(lambda byte: byte != original[position]))
    corrupted = checkpoint.with_name("corrupted.safetensors")
    corrupted.write_bytes(original[:position] + bytes([value]) + original[position + 1 :])
    corrupted.with_suffix(".json").write_bytes(checkpoint.with_suffix(".json").read_bytes())
    try:
        weights, _ = load_checkpoint(corrupted)
    except CheckpointError:
        return
    assert weights.sha256() == oracle_weights(get_expert(TASK)).sha256()


@pytest.mark.parametrize(
    ("name", "shape"),
    [("A", (4, 12, 11)), ("B", (4, 3, 12)), ("C", (4, 4, 12)), ("h0", (11,)), ("A", (3, 12, 12)), ("h0", (1, 12))],
)
def test_wrong_shape_rejected(tmp_path, name, shape):
    tensors = _tensors()
    tensors[name] = np.zeros(shape, dtype=np.float32)
    path = tmp_path / "shape.safetensors"
    _write_tensors(path, tensors)
    with pytest.raises(CheckpointError, match="shape|symbols"):
        load_checkpoint(path)


@pytest.mark.parametrize("name", ["A", "B", "C", "h0"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rejected(tmp_path, name, bad):
    tensors = _tensors()
    tensors[name] = tensors[name].copy()
    tensors[name].flat[0] = bad
    path = tmp_path / "nonfinite.safetensors"
    _write_tensors(path, tensors)
    with pytest.raises(CheckpointError, match="non-finite"):
        load_checkpoint(path)


@pytest.mark.parametrize("dtype", [np.int32, np.int8, np.float16, np.uint8])
def test_non_float_dtype_rejected(tmp_path, dtype):
    tensors = _tensors()
    tensors["A"] = tensors["A"].astype(dtype)
    path = tmp_path / "dtype.safetensors"
    _write_tensors(path, tensors)
    with pytest.raises(CheckpointError, match="dtype"):
        load_checkpoint(path)


def test_mixed_float_dtypes_rejected_or_consistent(tmp_path):
    tensors = _tensors()
    tensors["B"] = tensors["B"].astype(np.float64)
    path = tmp_path / "mixed.safetensors"
    _write_tensors(path, tensors)
    try:
        weights, _ = load_checkpoint(path)
    except CheckpointError:
        return
    assert weights.sha256() == oracle_weights(get_expert(TASK)).sha256()


@pytest.mark.parametrize("change", ["extra", "missing"])
def test_tensor_names_checked(tmp_path, change):
    tensors = _tensors()
    if change == "extra":
        tensors["payload"] = np.zeros(3, dtype=np.float32)
    else:
        del tensors["h0"]
    path = tmp_path / "names.safetensors"
    _write_tensors(path, tensors)
    with pytest.raises(CheckpointError, match="tensors"):
        load_checkpoint(path)


def test_oversized_file_rejected(tmp_path):
    path = tmp_path / "huge.safetensors"
    with path.open("wb") as file:
        file.truncate(MAX_CHECKPOINT_BYTES + 1)  # sparse: takes no disk space
    path.with_suffix(".json").write_text(json.dumps({"task": TASK}))
    with pytest.raises(CheckpointError, match="limit"):
        load_checkpoint(path)


def test_oversized_metadata_rejected(checkpoint):
    with checkpoint.with_suffix(".json").open("r+b") as file:
        file.truncate(MAX_METADATA_BYTES + 1)
    with pytest.raises(CheckpointError, match="limit"):
        load_checkpoint(checkpoint)


def test_huge_header_length_rejected(tmp_path):
    """A safetensors header that claims 2**63 bytes must not make the loader allocate them."""
    path = tmp_path / "header.safetensors"
    path.write_bytes(struct.pack("<Q", 2**63) + b"{}")
    path.with_suffix(".json").write_text(json.dumps({"task": TASK}))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_header_with_out_of_range_offsets_rejected(tmp_path):
    header = json.dumps({"A": {"dtype": "F32", "shape": [4, 12, 12], "data_offsets": [0, 10**12]}}).encode()
    path = tmp_path / "offsets.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
    path.with_suffix(".json").write_text(json.dumps({"task": TASK}))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_pickle_weights_never_unpickled(tmp_path, protocol):
    marker = tmp_path / "unpickled-marker"
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(_WriteMarker(marker), protocol=protocol))
    path.with_suffix(".json").write_text(json.dumps({"task": TASK}))
    # The payload works: unpickling it here would create the marker.
    assert b"touch" in path.read_bytes()
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


def test_torch_save_file_never_unpickled(tmp_path):
    import torch

    marker = tmp_path / "unpickled-marker"
    path = tmp_path / "torch.safetensors"
    torch.save({"A": _WriteMarker(marker)}, path)
    path.with_suffix(".json").write_text(json.dumps({"task": TASK}))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


def test_pickle_metadata_never_unpickled(checkpoint, tmp_path):
    marker = tmp_path / "unpickled-marker"
    checkpoint.with_suffix(".json").write_bytes(pickle.dumps(_WriteMarker(marker)))
    with pytest.raises(CheckpointError, match="JSON"):
        load_checkpoint(checkpoint)
    assert not marker.exists()


def test_unpickling_payload_creates_marker(tmp_path):
    """Control: the payload of the tests above does create the marker when unpickled."""
    marker = tmp_path / "unpickled-marker"
    pickle.loads(pickle.dumps(_WriteMarker(marker)))
    assert marker.exists()


@pytest.mark.parametrize(
    "document",
    [[], "add2", 7, None, {"task": "mult99"}, {"task": ["add2"]}, {}],
)
def test_bad_metadata_rejected(checkpoint, document):
    checkpoint.with_suffix(".json").write_text(json.dumps(document))
    with pytest.raises(CheckpointError):
        load_checkpoint(checkpoint)


def test_metadata_sha256_mismatch_rejected(checkpoint):
    sidecar = checkpoint.with_suffix(".json")
    document = json.loads(sidecar.read_text())
    document["sha256"] = "0" * 64
    sidecar.write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(checkpoint)


def test_wrong_task_rejected(checkpoint):
    with pytest.raises(CheckpointError, match="task"):
        load_checkpoint(checkpoint, task="add10")


def test_metadata_not_utf8_rejected(checkpoint):
    checkpoint.with_suffix(".json").write_bytes(b"\xff\xfe{\x00}")
    with pytest.raises(CheckpointError, match="JSON"):
        load_checkpoint(checkpoint)


def test_symlink_to_pickle_rejected(tmp_path):
    marker = tmp_path / "unpickled-marker"
    target = tmp_path / "payload.bin"
    target.write_bytes(pickle.dumps(_WriteMarker(marker)))
    link = tmp_path / "link.safetensors"
    os.symlink(target, link)
    link.with_suffix(".json").write_text(json.dumps({"task": TASK}))
    with pytest.raises(CheckpointError):
        load_checkpoint(link)
    assert not marker.exists()


def test_fifo_rejected_without_blocking(tmp_path):
    """A named pipe would block a reader forever; the loader must reject it without opening it."""
    import threading

    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    fifo.with_suffix(".json").write_text(json.dumps({"task": TASK}))
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            load_checkpoint(fifo)
        except BaseException as error:  # noqa: BLE001 - recorded for the asserts below
            outcome.append(error)
        else:
            outcome.append(None)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(timeout=10)
    if thread.is_alive():
        with open(fifo, "wb"):  # release the blocked reader so the test process can exit
            pass
        pytest.fail("load_checkpoint blocked on a named pipe")
    assert isinstance(outcome[0], CheckpointError)


def test_overlong_path_rejected(tmp_path):
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / ("a" * 5000 + ".safetensors"))
