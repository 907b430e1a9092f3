"""Off-air recording as the daemon wires it: the recorder process fed by the playout
process, the agent's view of their store, the uploader of ``upload_recording``, and what
Status, /recordings and the play reports ask of them."""

from __future__ import annotations

from typing import Any

from agent.config.model import Config
from agent.core.clock import Clock
from agent.core.faults import FaultRegistry
from agent.http.metrics import AgentMetrics
from agent.mqtt.commands import Command
from agent.recording.index import StoreView
from agent.recording.process import RecorderProcess, RecorderSettings
from agent.recording.span import Recording
from agent.recording.upload import RecordingUploader
from agent.source.client import SourceClient
from agent.state.journal import Journal


class OffAirRecording:
    def __init__(self, cfg: Config, *, faults: FaultRegistry, clock: Clock, journal: Journal,
                 metrics: AgentMetrics, source: SourceClient) -> None:
        self._journal = journal
        self.view: StoreView | None = None
        self.process: RecorderProcess | None = None
        if cfg.recording.enabled:
            view = self.view = StoreView(cfg.recording.dir)
            self.process = RecorderProcess(RecorderSettings.from_config(cfg), faults,
                                           metrics.recording_dropped)
            metrics.watch_recording(lambda: view.size)
            journal.recording_segment = self._segment_of
        self.uploads = RecordingUploader(self.view, source, journal, clock, metrics.command,
                                         max_backoff_s=cfg.source.max_backoff_s,
                                         segment_s=cfg.recording.segment_s)

    @property
    def record_fd(self) -> int | None:
        """Where the playout process writes what left the card; None when off."""
        return None if self.process is None else self.process.write_fd

    def start(self) -> None:
        if self.process is not None:
            self.process.start()
        self.uploads.start()

    def stop_recorder(self) -> None:
        """After the playout process stopped: record what is left, close the segment."""
        if self.process is not None:
            self.process.stop()

    def stop_uploads(self) -> None:
        self.uploads.stop()

    def upload(self, command: Command) -> None:
        self.uploads.submit(command)

    def span(self, first: float, last: float) -> Recording | None:
        return None if self.view is None else self.view.span(first, last)

    def status(self) -> dict[str, Any] | None:
        """Status ``recording`` (mqtt.md): null when off."""
        if self.view is None:
            return None
        status = self.view.status()
        since = status["since"]
        return {"since": None if since is None else self._journal.stamp(since),
                "bytes": status["bytes"]}

    def _segment_of(self, moment: float) -> str | None:
        assert self.view is not None
        start = self.view.segment_holding(moment)
        return None if start is None else self._journal.stamp(start)
