"""Every bundled guest on KVM: exact output (derived here from what it computes) and stop reason."""

from __future__ import annotations

import pytest

from minikvm.boot.bundled import BUNDLED
from minikvm.stop import StopKind

from .harness import ACCELERATORS, bundled_spec, kvm_limitation, run_one, run_specs, symbol_address


def multiplication(rows: range) -> bytes:
    return "".join(f"{i}x{j}={i * j} " for i in rows for j in range(1, 10)).encode() + b"\n"


def fibonacci(count: int) -> bytes:
    numbers = [0, 1]
    while len(numbers) < count:
        numbers.append(numbers[-1] + numbers[-2])
    return ("Fibonacci: " + ", ".join(map(str, numbers)) + "\n").encode()


def matrix() -> bytes:
    a = [[i + j + 1 for j in range(8)] for i in range(8)]
    b = [[(i * 8 + j) % 7 for j in range(8)] for i in range(8)]
    c = [[sum(a[i][k] * b[k][j] for k in range(8)) for j in range(8)] for i in range(8)]
    rows = "".join(" ".join(map(str, row)) + "\n" for row in c)
    return f"Matrix C = A x B (8x8):\n{rows}trace = {sum(c[i][i] for i in range(8))}\n".encode()


def primes(limit: int) -> bytes:
    sieve = bytearray([1]) * limit
    sieve[0:2] = b"\0\0"
    for n in range(2, int(limit ** 0.5) + 1):
        if sieve[n]:
            sieve[n * n::n] = bytes(len(range(n * n, limit, n)))
    found = [n for n in range(limit) if sieve[n]]
    return f"primes below {limit}: {len(found)}, sum {sum(found)}\n".encode()


EXPECTED = {
    "minimal": (b"", StopKind.HALT),
    "hello": (b"Hello, KVM!\n", StopKind.HALT),
    "counter": ("".join(str(d) for d in range(10)).encode() + b"\n", StopKind.HALT),
    "multiplication": (multiplication(range(2, 10)), StopKind.EXIT_HYPERCALL),
    "multiplication_short": (multiplication(range(2, 3)), StopKind.HALT),
    "fibonacci": (fibonacci(15), StopKind.HALT),
    "matrix": (matrix(), StopKind.EXIT_HYPERCALL),
    "hctest": (b"Hello!\n", StopKind.UNKNOWN_HYPERCALL),
    "hello_pm": (b"Hello from protected mode!\n", StopKind.EXIT_HYPERCALL),
    "hello_64": (b"Hello from 64-bit!\n", StopKind.EXIT_HYPERCALL),
    "primes_64": (primes(1_000_000), StopKind.EXIT_HYPERCALL),
}


def test_every_bundled_guest_has_an_expectation() -> None:
    # The 1K OS is interactive: test_os1k.py runs its sessions.
    assert sorted(EXPECTED) == sorted(g.name for g in BUNDLED if g.name != "os1k")


@pytest.mark.parametrize("accel", ACCELERATORS)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bundled_guest(name: str, accel: str) -> None:
    spec = bundled_spec(name)
    if accel == "kvm" and (limitation := kvm_limitation(spec.mode)):
        pytest.fail(f"this host's KVM cannot run a core guest: {limitation}")
    output, kind = EXPECTED[name]
    outcome = run_one(spec, accel=accel)
    assert outcome.output == output, outcome.explain()
    assert outcome.result.stop.kind is kind, outcome.explain()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_both_accelerators_agree(name: str) -> None:
    """Differential run: the same guest on KVM and on the software CPU, compared."""
    kvm, emu = (run_one(bundled_spec(name), accel=accel) for accel in ACCELERATORS)
    assert kvm.output == emu.output
    assert kvm.result.stop.kind is emu.result.stop.kind
    assert kvm.result.stop.message == emu.result.stop.message
    assert kvm.result.stop.rip == emu.result.stop.rip, (kvm.explain(), emu.explain())


@pytest.mark.parametrize("accel", ACCELERATORS)
def test_unknown_hypercall_names_number_and_address_of_the_out(accel: str) -> None:
    spec = bundled_spec("hctest")
    outcome = run_one(spec, accel=accel)
    stop = outcome.result.stop
    assert "0x7f" in stop.message
    from minikvm.boot.bundled import find_bundled

    elf = find_bundled("hctest").path.with_suffix(".elf")  # type: ignore[union-attr]
    assert stop.rip == symbol_address(elf, "bad_hypercall"), outcome.explain()
    assert "out dx, al" in outcome.report[0]
    assert outcome.result.stop.status == 1


@pytest.mark.parametrize("accel", ACCELERATORS)
@pytest.mark.parametrize("count", [2, 4, 8])
def test_guests_in_parallel_keep_their_own_output(count: int, accel: str) -> None:
    names = [sorted(EXPECTED)[i % len(EXPECTED)] for i in range(count)]
    outcomes = run_specs([bundled_spec(n) for n in names], accel=accel)
    for name, outcome in zip(names, outcomes, strict=True):
        output, kind = EXPECTED[name]
        assert outcome.output == output, outcome.explain()
        assert outcome.result.stop.kind is kind


def test_each_guest_has_its_own_vm_and_memory() -> None:
    # Two copies of a guest that writes the same addresses: neither sees the other.
    outcomes = run_specs([bundled_spec("matrix"), bundled_spec("matrix"), bundled_spec("fibonacci")])
    assert outcomes[0].output == outcomes[1].output == matrix()
    assert outcomes[2].output == fibonacci(15)
