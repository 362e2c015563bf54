"""Create/run/destroy cycles of a small VM in one process: nothing may pile up.

100 cycles per accelerator (bench/soak.py runs 1,000), each a different way
for a guest to end: PUTCHAR then the EXIT hypercall, a timeout, a fault with
its stop report (on KVM a triple fault is replayed on the software CPU for
the report), end of input, and a Ctrl-C-like stop request. Open file
descriptors and threads (Python's and the kernel's) must be exactly as
before; RSS, measured after a garbage collection and malloc_trim so that
heap glibc keeps for reuse does not count, within 5%.

Each run is a fresh `python -m tests.robustness.lifecycle` process, so the
numbers are not those of the pytest process and a crash is seen as one.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from .lifecycle import REPO
from .randguest import kvm_can_run

pytestmark = pytest.mark.timeout(240)

RSS_TOLERANCE = 0.05


def lifecycle(accel: str, cycles: int, mix: str | None = None) -> dict:
    argv = [sys.executable, "-m", "tests.robustness.lifecycle", "--accel", accel, "--cycles", str(cycles)]
    if mix is not None:
        argv += ["--mix", mix]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, timeout=200)
    status = done.returncode
    died = signal.Signals(-status).name if status < 0 else f"status {status}"
    assert status == 0, (f"the lifecycle process died ({died}); "
                         f"reproduce: {' '.join(argv[1:])}\n{done.stderr.decode(errors='replace')[-3000:]}")
    return json.loads(done.stdout)


def check(result: dict) -> None:
    before, after = result["before"], result["after"]
    assert not result["failures"], result["failures"][:10]
    assert after["fds"] == before["fds"], f"file descriptors {before['fds']} -> {after['fds']}"
    assert after["threads"] == before["threads"], f"Python threads {before['threads']} -> {after['threads']}"
    # KVM starts and ends worker threads of its own (a PIT or an NX-recovery thread): one or two more or
    # fewer say nothing; a leak would grow with the number of cycles.
    assert after["tasks"] <= before["tasks"] + 2, f"kernel threads {before['tasks']} -> {after['tasks']}"
    growth = (after["rss"] - before["rss"]) / before["rss"]
    assert growth <= RSS_TOLERANCE, (f"RSS grew {growth:.1%} over {result['cycles']} cycles "
                                     f"({before['rss'] >> 10} -> {after['rss'] >> 10} KiB)")


@pytest.mark.parametrize("accel", ["kvm", "emu"])
def test_hundred_cycles_leave_nothing_behind(accel: str, request: pytest.FixtureRequest) -> None:
    if accel == "kvm":
        request.getfixturevalue("kvm_required")
    result = lifecycle(accel, 100)
    assert sum(result["stops"].values()) == 100
    check(result)


@pytest.mark.parametrize("accel", ["kvm", "emu"])
def test_cycles_with_interrupt_controllers(accel: str, request: pytest.FixtureRequest) -> None:
    """--interrupts machines: KVM's in-kernel PIC/PIT (HLT with IF=0 found by the periodic kick), or
    minikvm's PIC/PIT models on the software CPU."""
    if accel == "kvm":
        request.getfixturevalue("kvm_required")
        if not kvm_can_run("real", True):
            pytest.skip("this host's KVM cannot run real-mode guests with interrupts")
    result = lifecycle(accel, 40, mix="interrupts")
    check(result)
