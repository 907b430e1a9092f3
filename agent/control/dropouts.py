"""Whether the listeners are hearing gaps: fault ``audio_dropouts`` from the silence the
sound card played for want of audio (its underruns, counted by the playout process).

A gap now and then (a stall of the machine, a restarted playout process) is logged and
counted in ``card_underrun_seconds``; gaps adding up to ``LIMIT_S`` within ``WINDOW_S``
are a controller that cannot keep its card fed, which operators must see. Pure: fed the
running total at each control tick, on the control loop's clock.
"""

from __future__ import annotations

from collections import deque

WINDOW_S = 60.0
LIMIT_S = 0.1  # of gaps within WINDOW_S: raised
CLEAR_AFTER_S = 300.0  # without a gap: cleared


class DropoutWatch:
    def __init__(self) -> None:
        self._gaps: deque[tuple[float, float]] = deque()  # (when, seconds) within WINDOW_S
        self._last_total_s = 0.0
        self._last_gap_at = 0.0
        self._worst_s = 0.0  # the most gap within WINDOW_S since the fault was raised
        self.raised = False

    def update(self, now: float, total_s: float) -> str | None:
        """``total_s``: the card's silence for want of audio since the agent started. The
        fault's message while it is raised, else None."""
        if total_s > self._last_total_s:
            self._gaps.append((now, total_s - self._last_total_s))
            self._last_gap_at = now
        self._last_total_s = total_s
        while self._gaps and self._gaps[0][0] <= now - WINDOW_S:
            self._gaps.popleft()
        recent_s = sum(seconds for _, seconds in self._gaps)
        if recent_s >= LIMIT_S:
            self.raised = True
        elif self.raised and now - self._last_gap_at >= CLEAR_AFTER_S:
            self.raised = False
            self._worst_s = 0.0
        if not self.raised:
            return None
        self._worst_s = max(self._worst_s, recent_s)
        return (f"the sound card ran dry for {self._worst_s * 1000:.0f} ms within "
                f"{WINDOW_S:.0f} s ({total_s:.2f} s since the agent started): listeners "
                "hear gaps; the controller is overloaded or stalls")
