"""Command-line value parsing and the exit-status rule (pure logic, no KVM)."""

from __future__ import annotations

import argparse

import pytest

from minikvm.cli import _unique, exit_status, parse_address, parse_seconds, parse_size
from minikvm.errors import printable
from minikvm.stop import StopKind, StopReason


@pytest.mark.parametrize(("text", "value"), [
    ("4M", 4 << 20), ("4MiB", 4 << 20), ("256k", 256 << 10), ("1G", 1 << 30), ("4194304", 4 << 20),
    ("0x400000", 4 << 20), ("512KB", 512 << 10), ("10b", 10),
])
def test_sizes(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["4X", "-1", "", "M", "1.5M", "0xZZ"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)


def test_addresses_and_seconds() -> None:
    assert parse_address("0x80001000") == 0x80001000 and parse_address("4096") == 4096
    assert parse_seconds("0.5") == 0.5
    for bad in ("zz", "-1", str(1 << 64)):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_address(bad)
    for bad in ("0", "-3", "nan", "inf", "abc"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_seconds(bad)


def test_duplicate_guest_names_get_suffixes() -> None:
    assert _unique(["hello", "hello", "counter", "hello"]) == ["hello", "hello-2", "counter", "hello-3"]
    # A guest already called hello-2 keeps its name; the repeat of hello skips it (two [hello-2] shared a log).
    assert _unique(["hello", "hello", "hello-2"]) == ["hello", "hello-3", "hello-2"]
    assert _unique(["hello-2", "hello", "hello"]) == ["hello-2", "hello", "hello-3"]


def stop(kind: StopKind, code: int = 0) -> StopReason:
    return StopReason(kind, kind.name, exit_code=code)


@pytest.mark.parametrize(("kinds", "status"), [
    ([StopKind.HALT, StopKind.EXIT_HYPERCALL], 0),
    ([StopKind.HALT, StopKind.TRIPLE_FAULT], 1),
    ([StopKind.TIMEOUT, StopKind.HALT], 124),
    ([StopKind.TIMEOUT, StopKind.INTERNAL_ERROR], 1),
    ([StopKind.INTERRUPTED, StopKind.TRIPLE_FAULT], 130),
    ([StopKind.UNKNOWN_HYPERCALL], 1),
])
def test_exit_status_priorities(kinds: list[StopKind], status: int) -> None:
    assert exit_status([stop(k) for k in kinds]) == status


def test_debug_exit_code_decides_cleanliness() -> None:
    assert exit_status([stop(StopKind.DEBUG_EXIT, 0)]) == 0
    assert exit_status([stop(StopKind.DEBUG_EXIT, 3)]) == 1


def test_messages_stay_on_one_line_whatever_the_file_name() -> None:
    assert printable("/tmp/a\nb.bin") == "/tmp/a\\nb.bin"
    assert printable("/tmp/h" + b"\xff".decode(errors="surrogateescape") + ".bin") == "/tmp/h\\xff.bin"
    assert printable("héllo wörld") == "héllo wörld"
