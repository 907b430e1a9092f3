"""Field sequences that once broke the core, found by the simulation and kept as
deterministic examples (each names the fix)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.state.plays import PlayJournal
from tests.simulation import events as ev
from tests.simulation.simulation import Simulation
from tests.simulation.test_field_sequences import run

REGRESSIONS: dict[str, list[ev.Event]] = {
    # A skipped program with a lone surrogate made the whole document unstorable, so the
    # rest of the schedule was never applied.
    "surrogate_in_a_skipped_program": [
        ev.Publish(({"id": "p0", "title": "t", "priority": "scheduled", "start": 0,
                     "source": {"type": "tts", "text": "\ud800"}},), frozenset(), False)],
    # A stop while the FM fallback of a dead stream relayed kept the tuner leased and
    # never reported the fallback.
    "stop_during_the_fm_fallback": [
        ev.Publish((), frozenset(), True),
        ev.Send("play_now", {"url": ev.STREAMS[0]}), ev.Wait(3.0)],
    # A restart while a command played: the new run did not know it, and it never ended.
    "restart_during_an_emergency": [
        ev.Send("emergency", {"url": ev.STREAMS[0], "start_at": 0}), ev.Restart(3.0, False)],
    "power_cut_during_an_emergency": [
        ev.Send("emergency", {"text": "Mưa lớn"}), ev.Restart(3.0, True)],
    # A program removed by a schedule update in the instant its first sample was on its
    # way: its voice kept sounding (or, for FM, held the engine with a released lease),
    # and its start was journaled for a playback already let go of: never reported.
    "fm_program_removed_as_it_starts": [
        ev.Publish(({"id": "p0", "title": "t", "priority": "scheduled", "start": 0,
                     "source": {"type": "fm", "frequency_mhz": 60.0}, "duration_s": 5},),
                   frozenset(), False),
        ev.Publish((), frozenset(), False), ev.Wait(3.0)],
    "stream_program_removed_as_it_starts": [
        ev.Publish(({"id": "p0", "title": "t", "priority": "scheduled", "start": 0,
                     "source": {"type": "stream", "url": ev.STREAMS[0]}, "duration_s": 5},),
                   frozenset(), False),
        ev.Publish((), frozenset(), False), ev.Wait(3.0)],
    # play_now of a media_id that is not cached, with its url: the file was relayed as a
    # live stream, so when it ended it was "dead" and aired again at every retry.
    "play_now_of_uncached_media_by_url": [
        ev.Send("play_now", {"media_id": "m2", "url": ev.ALERT_URL}), ev.Wait(20.0)],
    # The wall clock stepped back an hour (no re-planning): the programme preempted just
    # before the step aired again when its window came round, an item cued for its frame
    # sounded for nobody, and a command open at the step waited an hour. Now what plays
    # or is due keeps its place in real time (Arbiter.clock_stepped), and the play journal
    # reads "latest" in the order plays were written, not by their wall time.
    "clock_step_back_after_a_preemption": [
        ev.Publish(({"id": "p0", "title": "t", "priority": "scheduled", "start": 2,
                     "source": {"type": "tts", "text": "Mưa lớn"}},
                    {"id": "p1", "title": "t", "priority": "scheduled", "start": 0,
                     "source": {"type": "media", "items": ["m0"]}}), frozenset(), False),
        ev.Wait(2.0), ev.ClockStep(-3600.0)],
    "clock_step_back_before_an_emergency_start_at": [
        ev.Wait(0.5), ev.Send("emergency", {"url": ev.ALERT_URL, "start_at": 1}),
        ev.ClockStep(-3600.0)],
    # The amplifier's switch-on time was wall time: after the clock stepped back an hour
    # it seemed switched on in the future, and a play_now waited an hour for its warm-up.
    "warm_up_after_the_clock_stepped_back": [
        ev.Publish((), frozenset(), False), ev.Send("emergency", {"media_id": "m0"}),
        ev.ClockStep(-3600.0),
        ev.Send("play_now", {"media_id": "m0"})],
    # A decoder that hung on the first of three items was restarted over the next item,
    # which the engine had already begun (cued gapless behind it): that item was orphaned
    # "playing" for the arbiter, and the third aired again and again.
    "decoder_hung_with_the_next_item_cued": [
        ev.Wait(0.5),
        ev.Publish(({"id": "p0", "title": "t", "priority": "scheduled", "start": 0,
                     "source": {"type": "media", "items": ["m0"]}, "repeat": 3},),
                   frozenset(), False),
        ev.Decoder("hang")],
    # A decoder that hung from its start until its window ended: the item was reported
    # completed with played_s 0.
    "decoder_hung_until_the_window_ended": [
        ev.Wait(0.5),
        ev.Publish(({"id": "p0", "title": "t", "priority": "scheduled", "start": -6,
                     "source": {"type": "media", "items": ["m0"]}, "duration_s": 10},),
                   frozenset(), False),
        ev.Decoder("hang")],
    # A stream found dead in the tick its window ended: its FM fallback took the engine
    # from the program resuming after it (orphaned, then failed) and relayed for ever.
    "stream_dead_as_its_window_ends": [
        ev.Wait(0.5),
        ev.Publish(({"id": "p0", "title": "t", "priority": "scheduled", "start": 4,
                     "source": {"type": "stream", "url": ev.STREAMS[0]}, "duration_s": 5},
                    {"id": "p1", "title": "t", "priority": "scheduled", "start": 0,
                     "source": {"type": "media", "items": ["m0"]}}), frozenset(), True),
        ev.StreamGoes(ev.STREAMS[0], "silent")],
    # A program removed from the schedule while cued ahead of its start still aired (FM:
    # for ever, "playing" for nobody); so did an fm_relay whose window a clock step passed.
    "cued_program_removed_before_its_start": [
        ev.Publish(({"id": "p0", "title": "t", "priority": "scheduled", "start": 2,
                     "source": {"type": "fm", "frequency_mhz": 60.0}, "duration_s": 5},),
                   frozenset(), False),
        ev.Wait(1.0), ev.Publish((), frozenset(), False), ev.Wait(4.0)],
    "cued_relay_passed_by_a_clock_step": [
        ev.Send("fm_relay", {"frequency_mhz": 60.0, "duration_s": 5, "start_at": 1}),
        ev.Wait(0.5), ev.ClockStep(45.0)],
    # The first item ended and the window closed within one tick (the run's last minute
    # is played out in 2 s steps): the engine had begun the second, cued gapless, and it
    # sounded to its end "playing" for nobody.
    "window_closing_as_the_engine_moves_on": [
        ev.Publish(({"id": "p0", "title": "t", "priority": "scheduled", "start": 1,
                     "source": {"type": "media", "items": ["m0", "m1"]}, "duration_s": 5},),
                   frozenset(), False)],
    # An item cued on its frame after a repeat gap was replaced in the engine by a program
    # that won the air before the arbiter started it: it lingered, and when the program
    # came back the item after it aired again and again.
    "cued_after_a_repeat_gap_then_replaced": [
        ev.Publish(({"id": "p0", "title": "t", "priority": "scheduled", "start": 0,
                     "source": {"type": "media", "items": ["m0", "m1"]}, "repeat": 2,
                     "repeat_gap_s": 2},
                    {"id": "p1", "title": "t", "priority": "scheduled", "start": 0,
                     "source": {"type": "media", "items": ["m0"]}},
                    {"id": "p2", "title": "t", "priority": "scheduled", "start": 25,
                     "source": {"type": "media", "items": ["m0"]}}), frozenset(), False),
        ev.Send("sync_now", {}), ev.Send("emergency", {"media_id": "m0", "start_at": 0})],
}


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regression(name: str) -> None:
    run(REGRESSIONS[name])


@pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted"])
def test_a_silent_relay_preempted_rejoins_after_the_preemption(tmp_path: Path,
                                                               restart: bool) -> None:
    """An FM programme of a station not heard, preempted by an emergency: its segment is
    reported failed (it carried nothing), and the relay rejoins live when the emergency
    ends, as a preempted relay does (source-api.md), whether or not the agent restarted
    in between (it used to rejoin only if it had not; the restart ends the emergency)."""
    sim = Simulation(tmp_path)
    cut: list[ev.Event] = [ev.Restart(2.0, False)] if restart else []
    relay = {"id": "p0", "title": "t", "priority": "scheduled", "start": 0,
             "source": {"type": "fm", "frequency_mhz": 98.5}, "duration_s": 30}
    try:
        sim.play([ev.Station(98.5, False), ev.Publish((relay,), frozenset(), False),
                  ev.Wait(1.5), ev.Send("emergency", {"url": ev.ALERT_URL}), ev.Wait(1.0),
                  *cut])
        plays = [p for p in PlayJournal(sim.boot.store).between(0.0, 1e12)
                 if p.record["source"] == "fm"]
    finally:
        sim.close()
    assert [p.outcome for p in plays][:1] == ["preempted"], plays
    assert [p.record["outcome"] for p in plays][:1] == ["failed"]
    assert len(plays) >= 2, "the relay did not rejoin after the emergency"
