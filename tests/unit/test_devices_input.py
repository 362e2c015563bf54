import threading

import pytest

from minikvm.devices.input import EofWatch, InputBuffer


def drain(buffer: InputBuffer) -> bytes:
    out = bytearray()
    while (byte := buffer.read_byte()) is not None:
        out.append(byte)
    return bytes(out)


def test_bytes_come_out_in_order() -> None:
    buffer = InputBuffer()
    assert buffer.feed(b"ab") == 2
    assert buffer.feed(b"c") == 1
    assert buffer.pending == 3
    assert drain(buffer) == b"abc"
    assert buffer.read_byte() is None


def test_feed_stops_at_capacity_and_reports_what_it_took() -> None:
    buffer = InputBuffer(capacity=4)
    assert buffer.feed(b"abcdef") == 4
    assert buffer.feed(b"x") == 0
    assert buffer.read_byte() == ord("a")
    assert buffer.feed(b"ef") == 1
    assert drain(buffer) == b"bcde"


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        InputBuffer(capacity=0)


def test_on_data_follows_each_feed_that_queued_something() -> None:
    calls: list[int] = []
    buffer = InputBuffer(capacity=2)
    buffer.on_data = lambda: calls.append(buffer.pending)
    buffer.feed(b"a")
    buffer.feed(b"")
    buffer.feed(b"bc")
    buffer.feed(b"d")  # full: nothing queued, nobody woken
    assert calls == [1, 2]


def test_eof_only_once_closed_and_drained() -> None:
    buffer = InputBuffer()
    assert not buffer.at_eof  # open and empty: input may still come
    buffer.feed(b"z")
    buffer.close()
    assert not buffer.at_eof
    assert buffer.read_byte() == ord("z")
    assert buffer.at_eof
    with pytest.raises(ValueError):
        buffer.feed(b"late")


def test_a_feeder_thread_and_a_reader_keep_order() -> None:
    data = bytes(range(256)) * 40
    buffer = InputBuffer(capacity=64)

    def feeder() -> None:
        rest = data
        while rest:
            rest = rest[buffer.feed(rest[:50]) :]
        buffer.close()

    thread = threading.Thread(target=feeder)
    thread.start()
    got = bytearray()
    while not buffer.at_eof:
        byte = buffer.read_byte()
        if byte is not None:
            got.append(byte)
    thread.join()
    assert bytes(got) == data


def test_eof_watch_fires_after_the_grace_period_of_polling() -> None:
    watch = EofWatch(grace=0.5)
    assert not watch.poll_empty(10.0)
    assert not watch.poll_empty(10.3)
    assert not watch.poll_empty(10.49)
    assert watch.poll_empty(10.5)


def test_eof_watch_restarts_after_a_pause_or_a_reset() -> None:
    watch = EofWatch(grace=0.5)
    watch.poll_empty(0.0)
    assert not watch.poll_empty(5.0)  # a poll long after the last: a new run starts
    assert not watch.poll_empty(5.4)
    watch.reset()
    assert not watch.poll_empty(5.6)
    assert watch.poll_empty(6.1)


def test_zero_grace_fires_at_the_first_empty_poll() -> None:
    assert EofWatch(grace=0).poll_empty(3.0)


def test_a_tiny_grace_still_fires_on_a_tight_polling_loop() -> None:
    watch = EofWatch(grace=1e-6)  # shorter than the gap between two polls of any real guest
    assert not watch.poll_empty(1.0)
    assert watch.poll_empty(1.00001)
