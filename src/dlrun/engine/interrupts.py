"""Ctrl-C, SIGTERM (what Slurm, Kubernetes and `kill` send first) and SIGUSR1 (Slurm's `--signal` warning
before a time limit or preemption) all ask a run to stop. The first one is noted, and the loop stops at the
next optimizer step (or validation batch), so last.ckpt holds weights, RNG and data position of one and the
same moment and the resumed run is exact. A second Ctrl-C stops at once (KeyboardInterrupt)."""

import logging
import signal
import threading
from contextlib import contextmanager

log = logging.getLogger("dlrun")

SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)) if s is not None)


class StopRequested(KeyboardInterrupt):
    """Raised at a step boundary after a stop signal; `signum` says which (the exit code is 128 + signum)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    def __init__(self):
        self.received: int | None = None

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
        previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
