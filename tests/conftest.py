"""Suite-wide settings."""

from __future__ import annotations

import os
import tempfile

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_compiled_cache():
    """Compiled models (OpenVINO, ONNX Runtime) go to a folder of the test session's own,
    never the user's ~/.cache: set in the environment so subprocesses (the CLI, Ray
    workers) use it too. One folder for the whole session, so each size compiles once."""
    before = os.environ.get("CAMVIDEO_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="camvideo-test-cache-") as folder:
        os.environ["CAMVIDEO_CACHE_DIR"] = folder
        try:
            yield folder
        finally:
            if before is None:
                os.environ.pop("CAMVIDEO_CACHE_DIR", None)
            else:
                os.environ["CAMVIDEO_CACHE_DIR"] = before
