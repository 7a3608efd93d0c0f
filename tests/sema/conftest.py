"""Fixtures shared by the sema tests (CPU, one thread). Helpers live in sema_testing.py: a module called
`conftest` may be another folder's when the whole suite runs, so tests never import from conftest."""

import pytest
import torch

from sema_testing import BNNet


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture
def bnnet():
    return BNNet()
