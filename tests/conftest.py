import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    # The tests' networks are small: a second thread gains nothing, and on a 2-core machine whose
    # other core is busy (CI, a neighbour's job) two OpenMP threads per process slow every step
    # many times over (BENCHMARKS.md).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
