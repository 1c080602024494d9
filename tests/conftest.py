"""Shared fixtures: benchmark data, one local Ray cluster per session, the tiny model."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    env = os.environ.get("SELFDEBUG_SHARED_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if d is None:
        pytest.skip("benchmark data not found: ../shared/data is absent (set SELFDEBUG_SHARED_DATA)")
    return d


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster shared by the session's tests."""
    import ray

    from selfdebug.ray_utils import init_ray

    init_ray(num_cpus=6, _temp_dir=tempfile.mkdtemp(prefix="selfdebug-test-ray-"))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The small local Llama model (built once, cached under .cache/)."""
    from selfdebug.llm.tiny_model import build_tiny_model

    out = REPO / ".cache" / "tiny-model-test"
    build_tiny_model(out)  # no-op when already built with the same settings
    return out
