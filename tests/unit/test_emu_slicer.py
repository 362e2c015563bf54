"""The software CPU's slicer against a stand-in engine that records emu_stop calls (no Unicorn here)."""

from __future__ import annotations

import threading
import time

from minikvm.emu.slicer import Slicer


class Engine:
    def __init__(self) -> None:
        self.stops: list[float] = []
        self.stopped = threading.Event()

    def emu_stop(self) -> None:
        self.stops.append(time.monotonic())
        self.stopped.set()


def test_a_slice_is_stopped_at_its_deadline_not_before() -> None:
    engine = Engine()
    slicer = Slicer(engine)
    started = time.monotonic()
    slicer.begin(started + 0.05)
    assert engine.stopped.wait(5)
    assert engine.stops[0] - started >= 0.05
    slicer.end(time.monotonic())
    slicer.close()


def test_a_slice_that_ends_first_is_not_stopped() -> None:
    engine = Engine()
    slicer = Slicer(engine)
    slicer.begin(time.monotonic() + 0.2)
    slicer.end(time.monotonic())
    time.sleep(0.3)
    assert engine.stops == []
    slicer.close()


def test_a_due_stop_is_repeated_until_the_slice_ends() -> None:
    """emu_stop before Unicorn has started its run is lost: the slicer must say it again."""
    engine = Engine()
    slicer = Slicer(engine)
    slicer.begin(time.monotonic())
    time.sleep(0.05)
    assert len(engine.stops) >= 3
    slicer.end(time.monotonic())
    count = len(engine.stops)
    time.sleep(0.05)
    assert len(engine.stops) == count
    slicer.close()


def test_stop_now_ends_a_long_slice_from_another_thread() -> None:
    engine = Engine()
    slicer = Slicer(engine)
    slicer.begin(time.monotonic() + 60)
    threading.Thread(target=slicer.stop_now).start()
    assert engine.stopped.wait(5)
    slicer.end(time.monotonic())
    count = len(engine.stops)
    slicer.stop_now()  # no slice runs: nothing to stop
    time.sleep(0.02)
    assert len(engine.stops) == count
    slicer.close()


def test_close_ends_the_thread_and_a_slicer_never_used_starts_none() -> None:
    before = threading.active_count()
    unused = Slicer(Engine())
    assert threading.active_count() == before
    unused.close()
    used = Slicer(Engine())
    used.begin(time.monotonic() + 60)
    assert threading.active_count() == before + 1
    used.end(time.monotonic())
    used.close()
    assert threading.active_count() == before


def test_end_tells_a_stopped_slice_from_one_that_returned_by_itself() -> None:
    engine = Engine()
    slicer = Slicer(engine)
    slicer.begin(None)  # no deadline: only a stop ends it
    returned = time.monotonic()
    time.sleep(0.02)
    assert engine.stops == [] and slicer.end(returned) is False
    slicer.begin(None)
    slicer.stop_now()
    assert engine.stopped.wait(5)
    assert slicer.end(time.monotonic()) is True
    slicer.begin(None)
    slicer.stopped_inside()  # the vCPU thread's own stop: recorded, not repeated
    time.sleep(0.02)
    assert slicer.end(time.monotonic()) is True and len(engine.stops) == 1
    slicer.begin(time.monotonic() + 0.01)
    returned = time.monotonic()  # returned (HLT) before the deadline passed, noticed after
    time.sleep(0.05)
    assert slicer.end(returned) is False
    slicer.close()
