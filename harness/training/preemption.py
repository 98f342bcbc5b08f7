"""A preemption signal held back until the training loop ends its current step.

Under submitit, USR2 (preemption, or SLURM's warning before the time limit) calls the job's
`checkpoint()` and requeues at once, from inside the signal handler, wherever the loop is.
While `deferred_preemption` is active that handler is held back: the signal only marks a
request, the loop finishes its step, saves a checkpoint of that iteration and then hands the
signal on (`PreemptionRequest.step_ended`, then `forward`), so the requeued job redoes no
iteration. If the step has not ended `wait_s` seconds after the signal, the held-back handler
runs anyway (requeue without saving: the job resumes from the previous checkpoint). Outside
the context (data loading, evaluation) the signal is handled at once, as submitit does.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

PREEMPT_SIGNAL = signal.SIGUSR2  # submitit's preemption and time-limit signal
STEP_WAIT_S = 60.0  # seconds a signal waits for the current step to end before it is handled
_TIMER_SIGNAL = signal.SIGALRM  # ends the wait (signal.setitimer)


class PreemptionRequest:
    """Whether a preemption signal arrived during training, and what handles it."""

    def __init__(self, handler: Callable[[int, FrameType | None], Any], wait_s: float):
        self._handler = handler  # the signal's handler before the deferral (submitit's)
        self._wait_s = wait_s
        self._pending: tuple[int, FrameType | None] | None = None

    @property
    def requested(self) -> bool:
        """Whether a signal waits for the end of the current step."""
        return self._pending is not None

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: mark the request and start the wait; a second signal while one
        waits is handled at once."""
        if self._pending is not None:
            self.forward()
            return
        self._pending = (signum, frame)
        signal.setitimer(signal.ITIMER_REAL, self._wait_s)
        log.warning("caught %s: saving a checkpoint at the end of this step (at most %.0f s)",
                    signal.Signals(signum).name, self._wait_s)

    def on_timeout(self, signum: int, frame: FrameType | None) -> None:
        """Timer signal handler: the step did not end in time; hand the signal on unsaved."""
        log.warning("the training step did not end within %.0f s of the preemption signal; "
                    "requeueing without a checkpoint", self._wait_s)
        self.forward()

    def step_ended(self) -> bool:
        """Called at the end of each step: whether a signal waits (then its wait is over:
        saving the checkpoint is not timed, and `forward` hands the signal on after it)."""
        if self._pending is None:
            return False
        signal.setitimer(signal.ITIMER_REAL, 0)
        return True

    def forward(self) -> None:
        """Run the held-back handler for the waiting signal, if any (submitit's exits)."""
        signal.setitimer(signal.ITIMER_REAL, 0)
        pending, self._pending = self._pending, None
        if pending is not None:
            self._handler(*pending)


@contextmanager
def deferred_preemption(wait_s: float = STEP_WAIT_S) -> Iterator[PreemptionRequest | None]:
    """Hold back the preemption signal's Python handler until the loop honours it (see the
    module); yields None, changing nothing, where no Python handler is installed or off the
    main thread. On exit the handlers are restored and a waiting signal is handed on."""
    handler = signal.getsignal(PREEMPT_SIGNAL)
    if not callable(handler) or threading.current_thread() is not threading.main_thread():
        yield None
        return
    request = PreemptionRequest(handler, wait_s)
    timer_handler = signal.signal(_TIMER_SIGNAL, request.on_timeout)
    signal.signal(PREEMPT_SIGNAL, request.on_signal)
    try:
        yield request
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(PREEMPT_SIGNAL, handler)
        signal.signal(_TIMER_SIGNAL, timer_handler)
        request.forward()
