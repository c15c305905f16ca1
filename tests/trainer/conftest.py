import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """As train() does: one thread each, so parallel test runs on two cores do not oversubscribe them."""
    torch.set_num_threads(1)
