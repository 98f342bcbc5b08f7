"""A preemption signal during training saves the current iteration before the requeue
(harness.training.preemption): the resumed run redoes no iteration and ends with the weights
of an uninterrupted run; a step that does not end in time is not waited for."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest
import torch

from harness.config import load_config
from harness.runtime.checkpoint import latest_training_state, load_checkpoint
from harness.training import loop
from harness.training.loop import training_loop
from harness.training.preemption import PREEMPT_SIGNAL, deferred_preemption


class Requeued(BaseException):
    """What the stand-in for submitit's handler raises (submitit's exits the process)."""


@pytest.fixture()
def submitit_handler() -> Iterator[list[int]]:
    """A Python handler on USR2 like submitit's: records the signal, then ends the job."""
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        raise Requeued

    previous = signal.signal(PREEMPT_SIGNAL, handler)
    yield received
    signal.signal(PREEMPT_SIGNAL, previous)


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_usr2_mid_step_saves_that_iteration_and_resume_redoes_none(
    tmp_path: Path, smoke_overrides: list[str], submitit_handler: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = load_config(None, "smoke", [*smoke_overrides, "train.iterations=8",
                                         "train.checkpoint_every=8", "train.log_every=1"])
    real_step = loop.gan_step

    def step_signalled_at_4(*args, **kwargs):  # the signal arrives inside the 5th step
        if args[5] == 4:
            os.kill(os.getpid(), PREEMPT_SIGNAL)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "gan_step", step_signalled_at_4)
    alarm_handler = signal.getsignal(signal.SIGALRM)
    with pytest.raises(Requeued):
        training_loop(config, tmp_path / "b", progress=False)
    monkeypatch.undo()
    assert submitit_handler == [PREEMPT_SIGNAL]  # handed on once, after the step
    state = load_checkpoint(latest_training_state(tmp_path / "b"))
    assert state["iteration"] == 5  # the step under way finished and was saved: 0 redone
    assert signal.getsignal(signal.SIGALRM) == alarm_handler  # the timer's handler restored

    resumed = training_loop(config, tmp_path / "b", progress=False)
    metrics = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(m)["iteration"] for m in metrics] == list(range(1, 9))
    uninterrupted = training_loop(config, tmp_path / "a", progress=False)
    for name in ("generator", "discriminator", "generator_ema"):
        assert _states_equal(getattr(resumed, name), getattr(uninterrupted, name)), name
    assert submitit_handler == [PREEMPT_SIGNAL]


def test_a_step_that_does_not_end_in_time_hands_the_signal_on_unsaved(
    submitit_handler: list[int],
) -> None:
    with pytest.raises(Requeued), deferred_preemption(wait_s=0.2) as preemption:
        os.kill(os.getpid(), PREEMPT_SIGNAL)
        assert preemption is not None and preemption.requested and submitit_handler == []
        time.sleep(5)  # a step far longer than the wait: the timer hands the signal on
    assert submitit_handler == [PREEMPT_SIGNAL]
    with pytest.raises(Requeued):  # the handler is restored: a signal is handled at once
        os.kill(os.getpid(), PREEMPT_SIGNAL)
    assert submitit_handler == [PREEMPT_SIGNAL, PREEMPT_SIGNAL]


def test_without_a_python_handler_nothing_is_deferred() -> None:
    previous = signal.signal(PREEMPT_SIGNAL, signal.SIG_DFL)
    try:
        with deferred_preemption() as preemption:
            assert preemption is None and signal.getsignal(PREEMPT_SIGNAL) == signal.SIG_DFL
    finally:
        signal.signal(PREEMPT_SIGNAL, previous)
