"""The checked-in dfst.v1 stubs match the proto files."""

from __future__ import annotations

import pathlib

from dfst.v1 import generate


def test_checked_in_stubs_match_fresh_generation(tmp_path: pathlib.Path):
    written = generate.generate(tmp_path)
    fresh = {path.name: path.read_bytes() for path in written}
    checked_in_dir = generate.REPO_ROOT / "dfst" / "v1"
    checked_in = {path.name: path.read_bytes() for path in checked_in_dir.glob("*_pb2*.py*")}

    assert sorted(fresh) == sorted(checked_in), "run `python -m dfst.v1.generate` and commit the output"
    for name, content in fresh.items():
        assert checked_in[name] == content, f"{name} is stale; run `python -m dfst.v1.generate` and commit it"


def test_service_has_every_rpc():
    from dfst.v1 import service_pb2

    service = service_pb2.DESCRIPTOR.services_by_name["DfstService"]
    names = {method.name for method in service.methods}

    assert names == {"SubmitEval", "SubmitTraining", "GetJob", "ListJobs", "WatchJob", "CancelJob", "ListModels"}
    assert service.methods_by_name["WatchJob"].server_streaming
