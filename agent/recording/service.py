"""Off-air recording as the daemon wires it: the tap on the output, the recorder and its
store, the uploader of ``upload_recording``, and what Status, /recordings and the play
reports ask of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.config.model import Config
from agent.core.clock import Clock
from agent.core.faults import FaultRegistry
from agent.http.metrics import AgentMetrics
from agent.mqtt.commands import Command
from agent.recording.recorder import Recorder
from agent.recording.span import Recording
from agent.recording.store import SegmentStore
from agent.recording.upload import RecordingUploader
from agent.source.client import SourceClient
from agent.state.journal import Journal


class OffAirRecording:
    def __init__(self, cfg: Config, frame_time: Callable[[int], float], *,
                 faults: FaultRegistry, clock: Clock, journal: Journal,
                 metrics: AgentMetrics, source: SourceClient) -> None:
        """``frame_time``: the wall time at which a frame of the playout engine's numbering
        left the card; the engine hands each period to :attr:`offer`."""
        self._journal = journal
        self.recorder: Recorder | None = None
        self.offer: Callable[[int, bytes], None] | None = None
        if cfg.recording.enabled:
            rec = cfg.recording
            store = SegmentStore(rec.dir, rec.max_bytes, rec.max_days, clock.now)
            self.recorder = Recorder(store, faults, cfg.audio.rate, frame_time,
                                     on_drop=metrics.recording_dropped,
                                     segment_s=rec.segment_s)
            self.offer = self.recorder.offer
            metrics.watch_recording(lambda: store.size)
            journal.recording_segment = self._segment_of
        self.uploads = RecordingUploader(self.recorder, source, journal, clock,
                                         metrics.command,
                                         max_backoff_s=cfg.source.max_backoff_s)

    def start(self) -> None:
        if self.recorder is not None:
            self.recorder.start()
        self.uploads.start()

    def stop_recorder(self) -> None:
        """After the playout engine stopped: record what is queued, close the segment."""
        if self.recorder is not None:
            self.recorder.stop()

    def stop_uploads(self) -> None:
        self.uploads.stop()

    def upload(self, command: Command) -> None:
        self.uploads.submit(command)

    def span(self, first: float, last: float) -> Recording | None:
        return None if self.recorder is None else self.recorder.store.span(first, last)

    def status(self) -> dict[str, Any] | None:
        """Status ``recording`` (mqtt.md): null when off."""
        if self.recorder is None:
            return None
        status = self.recorder.status()
        since = status["since"]
        return {"since": None if since is None else self._journal.stamp(since),
                "bytes": status["bytes"]}

    def _segment_of(self, moment: float) -> str | None:
        assert self.recorder is not None
        start = self.recorder.segment_holding(moment)
        return None if start is None else self._journal.stamp(start)
