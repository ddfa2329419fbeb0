"""Interrupts are held back during writes and delivered right after: real signals to this process."""

from __future__ import annotations

import os
import signal

import pytest

from forgery import interrupts


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_a_write_is_delivered_after_it(sig: int) -> None:
    steps: list[str] = []
    with pytest.raises(KeyboardInterrupt), interrupts.handled():
        with interrupts.deferred():
            os.kill(os.getpid(), sig)
            steps.append("write finished")  # still runs: the interrupt waits
            with interrupts.deferred():
                steps.append("nested write finished")
            steps.append("outer write finished")  # the inner block's end does not deliver it yet
        steps.append("never reached")
    assert steps == ["write finished", "nested write finished", "outer write finished"]


def test_a_signal_outside_writes_interrupts_at_once() -> None:
    with pytest.raises(KeyboardInterrupt), interrupts.handled():
        os.kill(os.getpid(), signal.SIGTERM)
        pytest.fail("SIGTERM should have interrupted here")


def test_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with interrupts.handled():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
