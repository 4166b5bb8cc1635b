"""Ctrl-C, SIGTERM (what Slurm, Kubernetes and `kill` send first), SIGUSR1 and SIGUSR2 (Slurm's `--signal`
warning before a time limit or preemption; submitit uses USR2) all ask a run to stop. The first one is noted,
and the loop stops at the next optimizer step (or validation batch), so last.ckpt holds weights, RNG and data
position of one and the same moment and the resumed run is exact. A second Ctrl-C stops at once
(KeyboardInterrupt).

After last.ckpt is saved, the handler that was there before the run (submitit's, on a Slurm job started by
hydra/launcher=slurm) gets the signal too: submitit then requeues the job, and the requeued job continues its
own last.ckpt (Slurm sets SLURM_RESTART_COUNT; see checkpoint.resolve_resume)."""

import logging
import signal
import threading
from contextlib import contextmanager

log = logging.getLogger("dlrun")

SIGNALS = tuple(
    s
    for s in (
        signal.SIGINT,
        signal.SIGTERM,
        getattr(signal, "SIGUSR1", None),
        getattr(signal, "SIGUSR2", None),
    )
    if s is not None
)


class StopRequested(KeyboardInterrupt):
    """Raised at a step boundary after a stop signal; `signum` says which (the exit code is 128 + signum)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    def __init__(self):
        self.received: int | None = None
        self.previous: dict = {}

    def check(self) -> None:
        """At a step boundary: stop here if a signal came."""
        if self.received is not None:
            raise StopRequested(self.received)

    def _handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: now
        self.received = signum
        log.warning(
            "%s: stopping after this step and saving last.ckpt (Ctrl-C again to stop at once)",
            signal.Signals(signum).name,
        )

    @contextmanager
    def installed(self, enabled: bool = True):
        """Handlers for the duration of a fit (main thread only; elsewhere Python allows none)."""
        if not enabled or threading.current_thread() is not threading.main_thread():
            yield self
            return
        self.previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        try:
            yield self
        finally:
            for s, handler in self.previous.items():
                signal.signal(s, handler)

    def forward(self) -> None:
        """Once the run has saved: hand the signal to the handler installed before the run (submitit's
        requeue on Slurm), if it was a Python function; Python's own Ctrl-C handler is not one we need."""
        handler = self.previous.get(self.received)
        if callable(handler) and handler is not signal.default_int_handler:
            handler(self.received, None)
