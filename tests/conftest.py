"""Fixtures shared by the tests. Helpers to import are in tests/helpers.py."""

import os

import pytest
import torch

# Nothing in the test suite may reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run several times faster on one thread than on two threads competing for 2 cores.
    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Accelerate keeps one process-wide state; every test that trains in-process (vanilla-train, the loop
    benchmark) needs a fresh one, whatever precision the test before it trained in."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def tiny_config():
    from modeling_vanilla import VanillaTransformerConfig

    return VanillaTransformerConfig.tiny(dropout=0.0)


@pytest.fixture
def tiny_model(tiny_config):
    from modeling_vanilla import VanillaTransformerForConditionalGeneration

    return VanillaTransformerForConditionalGeneration(tiny_config).eval()

