"""Training tests: one torch thread (tiny networks run several times faster without thread contention)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tests.core.generate.gan_runs import one_torch_thread  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    """A 3-class toy dataset (12 samples, 32 x 32, with ignore rectangles)."""
    from core.train.toy import write_toy_dataset

    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "toy", count=12, size=32, num_classes=3, seed=0,
                             ignore_share=0.05)  # fmt: skip
