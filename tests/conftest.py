"""Shared fixtures and test parameters."""

from __future__ import annotations

import pytest

from dfst.experts import TASKS

# Tasks whose experts exist; the multiplication experts join once built.
BUILT_TASKS = []
for _task in TASKS:
    try:
        from dfst.experts import get_expert

        get_expert(_task)
        BUILT_TASKS.append(_task)
    except NotImplementedError:
        pass


@pytest.fixture(params=BUILT_TASKS)
def task(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def ray_session():
    """One real local Ray instance for the whole test session (Ray has no local mode)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
