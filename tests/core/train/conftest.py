"""Training tests: one torch thread (tiny networks run several times faster without thread contention)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    """A 3-class toy dataset (12 samples, 32 x 32, with ignore rectangles)."""
    from core.train.toy import write_toy_dataset

    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "toy", count=12, size=32, num_classes=3, seed=0,
                             ignore_share=0.05)  # fmt: skip
