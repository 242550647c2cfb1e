import os

import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=25, deadline=None)
settings.register_profile("dev", max_examples=10, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def cache_dir():
    """A folder kept between test sessions for large, reproducible artefacts."""
    path = os.path.join(os.path.expanduser("~"), ".cache", "minigemma-test")
    os.makedirs(path, exist_ok=True)
    return path
