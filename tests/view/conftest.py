"""A seeded store (tests/view/seed.py) and a viewer over it on a loopback port, shared by the view tests."""
from __future__ import annotations

import pytest

from tests.view.seed import build_store
from view.app import start_viewer


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("view"))


@pytest.fixture(scope="module")
def viewer(seeded):
    with start_viewer(seeded.path) as handle:
        yield handle
