"""Engine tests run torch single-threaded: on a 2-core machine shared with other test processes, OpenMP's
spinning threads make convolutional models several times slower, and one thread keeps timings steady."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_threaded_torch():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
