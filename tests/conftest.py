"""Shared fixtures and test parameters."""

from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import settings

from dfst.experts import TASKS

# CI runs the same generated examples every time, so that a red run can be
# reproduced; local runs keep exploring new examples.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# Tests never read or write the user's model registry or service data: both
# point into a fresh temporary folder, set before any Ray worker starts so that
# the workers inherit it too.
_ISOLATED_HOME = tempfile.mkdtemp(prefix="dfst-tests-")
os.environ["DFST_MODEL_DIR"] = os.path.join(_ISOLATED_HOME, "models")
os.environ["DFST_DATA_DIR"] = os.path.join(_ISOLATED_HOME, "data")


@pytest.fixture(params=TASKS)
def task(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def ray_session():
    """One real local Ray instance for the whole test session (Ray has no local mode)."""
    import ray

    if not ray.is_initialized():
        from dfst.workers.actors import LOCAL_RAY_SYSTEM_CONFIG

        # The service and fault tests time kills, restarts and cancellations against rollouts that
        # take seconds on the kernels, and the oracles' table path would finish them in milliseconds,
        # so the Ray workers of the tests run the kernels.  The library tests cover the table path.
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 _system_config=LOCAL_RAY_SYSTEM_CONFIG, runtime_env={"env_vars": {"DFST_AUTOMATON_TABLES": "0"}})
    yield ray
    ray.shutdown()
