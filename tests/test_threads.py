"""Thread shares of parallel simulator clients: a user's ``OMP_NUM_THREADS`` that oversubscribes is warned about."""

from __future__ import annotations

from fedgin.flare.simulate import oversubscription, threads_per_process


def test_an_oversubscribing_thread_count_is_warned_about_and_a_fitting_one_is_not():
    warning = oversubscription("2", processes=2, cores=2)
    assert warning and "4 threads on 2 cores" in warning and "set it to 1" in warning
    assert oversubscription("1", processes=2, cores=2) is None
    assert oversubscription(None, processes=2, cores=2) is None  # unset: the runner sets each client's share
    assert oversubscription("many", processes=2, cores=2) is None
    assert oversubscription("4", processes=3, cores=16) is None
    assert threads_per_process(3) == str(max(1, (__import__("os").cpu_count() or 1) // 3))
