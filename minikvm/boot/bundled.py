"""The guests minikvm ships (sources in guests/, built by its Makefile)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..arch.x86.state import Mode
from ..errors import MinikvmError


@dataclass(frozen=True)
class BundledGuest:
    name: str
    mode: Mode
    description: str

    @property
    def path(self) -> Path:
        return guests_dir() / f"{self.name}.bin"


BUNDLED = [
    BundledGuest("minimal", Mode.REAL, "a single HLT; prints nothing"),
    BundledGuest("hello", Mode.REAL, "prints 'Hello, KVM!' through the hypercall port"),
    BundledGuest("counter", Mode.REAL, "counts 0-9 through the COM1 UART"),
    BundledGuest("multiplication", Mode.REAL, "the 2x1 … 9x9 table on one line; ends by EXIT"),
    BundledGuest("multiplication_short", Mode.REAL, "the 2x table through the UART"),
    BundledGuest("fibonacci", Mode.REAL, "Fibonacci numbers F0 … F14"),
    BundledGuest("matrix", Mode.REAL, "an 8x8 integer matrix product and its trace"),
    BundledGuest("hctest", Mode.REAL, "prints 'Hello!', then uses a retired hypercall number"),
    BundledGuest("hello_pm", Mode.PROTECTED, "hello from 32-bit protected mode through the UART"),
    BundledGuest("hello_64", Mode.LONG, "hello from 64-bit long mode"),
    BundledGuest("primes_64", Mode.LONG, "a prime sieve in a ring-3 task: KVM's native speed"),
    BundledGuest("os1k", Mode.PAGING, "the 1K OS: ring 3, system calls, preemption, a shell and 20 programs"),
]

DEFAULT_GUEST = "os1k"


class UnknownGuestError(MinikvmError):
    def __init__(self, name: str) -> None:
        import difflib  # only to suggest names: kept off the start-up path

        self.name = name
        close = difflib.get_close_matches(name, [g.name for g in BUNDLED], n=3)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else \
            " (see 'minikvm guests')"
        super().__init__(f"'{name}' is neither a file nor a bundled guest{hint}")


class GuestNotBuiltError(MinikvmError):
    def __init__(self, guest: BundledGuest) -> None:
        self.guest = guest
        super().__init__(f"bundled guest '{guest.name}' is not built ({guest.path} is missing): "
                         "run 'make -C guests'")


def guests_dir() -> Path:
    """Where the built guests are: $MINIKVM_GUESTS, else guests/build beside the package."""
    override = os.environ.get("MINIKVM_GUESTS")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "guests" / "build"


def find_bundled(name: str) -> BundledGuest | None:
    return next((g for g in BUNDLED if g.name == name), None)
