"""blas_threads: numpy's BLAS held to one thread inside, restored after, every time."""

from __future__ import annotations

import numpy as np
import pytest

from traj.engine.backends.base import blas_threads

threadpoolctl = pytest.importorskip("threadpoolctl")


def _blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]


def test_one_thread_inside_and_the_old_count_after_on_every_use():
    before = _blas_threads()
    assert before, "numpy's BLAS is not visible to threadpoolctl"
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):  # a count to restore that is not 1
        outer = _blas_threads()
        for _ in range(3):  # the controller is kept between uses: each use must still limit and restore
            with blas_threads():
                assert _blas_threads() == [1] * len(outer)
                np.linalg.svd(np.ones((4, 4)))
            assert _blas_threads() == outer
        import json.tool  # noqa: F401  (a new module: the controller is made again)

        with blas_threads():
            assert _blas_threads() == [1] * len(outer)
        with blas_threads(one=False):
            assert _blas_threads() == outer
    assert _blas_threads() == before
