"""How a daemon (agent, collector, hicc) hears its signals: SIGTERM/SIGINT stop it, a second one exits at once,
SIGHUP asks for a reload.

The handlers only append to lists and never take a lock.  A Python signal handler runs in the main
thread between two of its bytecodes, which may be inside ``threading.Event.wait`` while it holds that
event's lock; a handler calling ``Event.set()`` then waits for itself for good.  That is how a collector
once ignored SIGTERM until it was killed.

The wait is woken through ``signal.set_wakeup_fd`` (the interpreter writes a byte to a pipe when a
signal arrives, before any handler runs), not by polling: a poll of 0.2 s made every stop and reload
wait 0.1 s on average, and the end-to-end benchmark counts a collector's stop in its time.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time
from types import FrameType

from logflume.stopflag import drain

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class DaemonSignals:
    """Install early (before anything slow), then loop on :meth:`wait` in the main thread.

    ``wait`` returns ``"stop"`` once a stop signal has come (also one that came before it was called)
    and ``"reload"`` once per SIGHUP burst.  A second stop signal logs a warning and exits the process
    at once with ``128 + signum``, without draining, as an operator who sends it means.
    """

    def __init__(self, log: logging.Logger, reload: bool = True) -> None:
        self._log = log
        self._reload = reload
        self._stops: list[int] = []
        self._hups: list[int] = []
        self._hups_done = 0
        self._wake: int | None = None  # read end of the wakeup pipe, once installed

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_stop)
        if self._reload:
            signal.signal(signal.SIGHUP, self._on_hup)
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        try:
            signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        except ValueError:  # not the main thread: ``wait`` polls instead
            os.close(r)
            os.close(w)
        else:
            self._wake = r

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        self._stops.append(signum)
        if len(self._stops) > 1:
            self._log.warning("second signal: exiting now")
            os._exit(128 + signum)

    def _on_hup(self, signum: int, _frame: FrameType | None) -> None:
        self._hups.append(signum)

    @property
    def stopping(self) -> bool:
        return bool(self._stops)

    def wait(self, poll: float = 0.2) -> str:
        """Block until a stop (``"stop"``) or a reload request (``"reload"``); a stop wins over a reload.

        Woken at once by a signal once installed; ``poll`` only bounds each wait (and is the polling
        interval where no wakeup pipe could be set up).
        """
        while True:
            if self._stops:
                self._log.info("signal %s: stopping (send again to exit at once)",
                               signal.Signals(self._stops[0]).name)
                return "stop"
            if len(self._hups) > self._hups_done:
                self._hups_done = len(self._hups)  # signals during the reload ask for one more
                return "reload"
            if self._wake is None:
                time.sleep(poll)
                continue
            select.select([self._wake], [], [], poll)  # a byte arrives before the handler has run
            drain(self._wake)
