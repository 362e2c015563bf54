import dataclasses

import pytest

from minikvm.stop import StopKind, StopReason


@pytest.mark.parametrize(
    ("reason", "clean", "status"),
    [
        (StopReason.halt(), True, 0),
        (StopReason(StopKind.EXIT_HYPERCALL, "exit hypercall"), True, 0),
        (StopReason(StopKind.RESET, "reset through port 0x92"), True, 0),
        (StopReason(StopKind.DEBUG_EXIT, "debug exit with code 0"), True, 0),
        (StopReason(StopKind.DEBUG_EXIT, "debug exit with code 3", exit_code=3), False, 1),
        (StopReason(StopKind.UNKNOWN_HYPERCALL, "unknown hypercall 0x7f"), False, 1),
        (StopReason(StopKind.INPUT_EOF, "waiting for input"), False, 1),
        (StopReason(StopKind.TRIPLE_FAULT, "triple fault"), False, 1),
        (StopReason(StopKind.INTERNAL_ERROR, "emulation failure"), False, 1),
        (StopReason(StopKind.FAIL_ENTRY, "entry failed"), False, 1),
        (StopReason(StopKind.ACCEL_ERROR, "KVM_RUN failed"), False, 1),
        (StopReason(StopKind.UNHANDLED_EXIT, "exit 42"), False, 1),
        (StopReason.timeout(2.5), False, 124),
        (StopReason.interrupted(), False, 130),
    ],
)
def test_clean_and_status(reason: StopReason, clean: bool, status: int) -> None:
    assert reason.clean is clean
    assert reason.status == status


def test_every_kind_has_a_distinct_label() -> None:
    labels = [kind.label for kind in StopKind]
    assert all(labels)
    assert len(set(labels)) == len(labels)


def test_constructors_say_what_happened() -> None:
    assert StopReason.halt().message == "halted (HLT)"
    assert StopReason.timeout(2.5).message == "timed out after 2.5 s"
    assert StopReason.interrupted().kind is StopKind.INTERRUPTED


def test_run_loop_can_add_the_guest_address() -> None:
    reason = dataclasses.replace(StopReason.halt(), rip=0x7C00)
    assert reason.rip == 0x7C00
    assert reason.clean
    with pytest.raises(dataclasses.FrozenInstanceError):
        reason.rip = 0  # type: ignore[misc]
