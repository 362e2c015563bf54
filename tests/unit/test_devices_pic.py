"""The 8259A pair driven through its ports, as Linux and hobby kernels drive it."""

from __future__ import annotations

import threading

import pytest

from minikvm.devices.bus import Bus
from minikvm.devices.pic import Pic8259Pair, PicState

MASTER_CMD, MASTER_DATA = 0x20, 0x21
SLAVE_CMD, SLAVE_DATA = 0xA0, 0xA1
# Values as drivers spell them.
ICW1_EDGE_CASCADE_ICW4 = 0x11
ICW1_LEVEL = 0x19
ICW1_SINGLE = 0x13
ICW4_8086 = 0x01
ICW4_8086_AEOI = 0x03
EOI = 0x20
SPECIFIC_EOI = 0x60
READ_IRR = 0x0A
READ_ISR = 0x0B


class Rig:
    """A pair on a port bus, with the INTR wake-ups it reports."""

    def __init__(self) -> None:
        self.wakeups = 0
        self.pic = Pic8259Pair(on_change=self._wake)
        self.bus = Bus()
        self.bus.register(0x20, 2, self.pic.master_ports, "pic master")
        self.bus.register(0xA0, 2, self.pic.slave_ports, "pic slave")

    def _wake(self) -> None:
        self.wakeups += 1

    def outb(self, port: int, value: int) -> None:
        self.bus.write(port, 1, value)

    def inb(self, port: int) -> int:
        return self.bus.read(port, 1)

    def pulse(self, irq: int) -> None:
        self.pic.set_irq(irq, True)
        self.pic.set_irq(irq, False)

    def remap(
        self,
        master: int = 0x20,
        slave: int = 0x28,
        icw1: int = ICW1_EDGE_CASCADE_ICW4,
        icw4: int = ICW4_8086,
        masks: tuple[int, int] = (0x00, 0x00),
    ) -> None:
        """The OSDev-wiki style remap most hobby kernels copy."""
        self.outb(MASTER_CMD, icw1)
        self.outb(SLAVE_CMD, icw1)
        self.outb(MASTER_DATA, master)
        self.outb(SLAVE_DATA, slave)
        self.outb(MASTER_DATA, 0x04)  # slave on IR2
        self.outb(SLAVE_DATA, 0x02)  # cascade identity 2
        self.outb(MASTER_DATA, icw4)
        self.outb(SLAVE_DATA, icw4)
        self.outb(MASTER_DATA, masks[0])
        self.outb(SLAVE_DATA, masks[1])

    def isr(self, cmd: int) -> int:
        self.outb(cmd, READ_ISR)
        value = self.inb(cmd)
        self.outb(cmd, READ_IRR)
        return value

    def irr(self, cmd: int) -> int:
        self.outb(cmd, READ_IRR)
        return self.inb(cmd)


def test_bios_vectors_and_masks_before_any_initialisation() -> None:
    rig = Rig()
    assert rig.inb(MASTER_DATA) == 0xF8  # timer, keyboard, cascade unmasked
    assert rig.inb(SLAVE_DATA) == 0xFF
    assert rig.pic.pending_vector() is None
    rig.pulse(0)
    assert rig.pic.pending_vector() == 0x08
    assert rig.pic.acknowledge() == 0x08
    rig.outb(MASTER_CMD, EOI)
    rig.outb(SLAVE_DATA, 0xFE)  # unmask IRQ 8 (the RTC's)
    rig.pulse(8)
    assert rig.pic.acknowledge() == 0x70
    rig.pulse(4)  # COM1 stays masked until the guest unmasks it
    assert rig.pic.pending_vector() is None


def test_linux_probe_and_init_sequence() -> None:
    rig = Rig()
    # probe_8259A: mask everything, then a pattern must read back.
    rig.outb(SLAVE_DATA, 0xFF)
    rig.outb(MASTER_DATA, 0xA5)
    assert rig.inb(MASTER_DATA) == 0xA5
    # init_8259A: masked, then ICW1-4 on each chip, vectors 0x30 and 0x38.
    rig.outb(MASTER_DATA, 0xFF)
    rig.outb(SLAVE_DATA, 0xFF)
    for cmd, data, base, icw3 in ((MASTER_CMD, MASTER_DATA, 0x30, 0x04), (SLAVE_CMD, SLAVE_DATA, 0x38, 0x02)):
        rig.outb(cmd, ICW1_EDGE_CASCADE_ICW4)
        rig.outb(data, base)
        rig.outb(data, icw3)
        rig.outb(data, ICW4_8086)
    assert rig.inb(MASTER_DATA) == 0x00  # ICW1 cleared the mask
    rig.outb(MASTER_DATA, 0xFB)  # cached masks written back: only the cascade open
    rig.outb(SLAVE_DATA, 0xFF)
    rig.pulse(0)
    assert rig.pic.pending_vector() is None
    rig.outb(MASTER_DATA, 0xFA)  # enable_irq(0)
    assert rig.pic.acknowledge() == 0x30
    # mask_and_ack_8259A for IRQ 0: mask, specific EOI.
    rig.outb(MASTER_DATA, 0xFB)
    rig.outb(MASTER_CMD, SPECIFIC_EOI + 0)
    assert rig.isr(MASTER_CMD) == 0
    rig.outb(SLAVE_DATA, 0xBF)  # enable_irq(14)
    rig.pulse(14)
    assert rig.pic.acknowledge() == 0x3E
    # ... and for IRQ 14: specific EOI on the slave, then for IR2 on the master.
    rig.outb(SLAVE_CMD, SPECIFIC_EOI + 6)
    rig.outb(MASTER_CMD, SPECIFIC_EOI + 2)
    assert (rig.isr(MASTER_CMD), rig.isr(SLAVE_CMD)) == (0, 0)


def test_icw2_low_bits_are_the_ir_number_not_the_base() -> None:
    rig = Rig()
    rig.remap(master=0x25, slave=0x2F)
    rig.pulse(1)
    rig.pulse(9)
    assert rig.pic.acknowledge() == 0x21
    rig.outb(MASTER_CMD, EOI)
    assert rig.pic.acknowledge() == 0x29


def test_hobby_os_remap_and_non_specific_eoi() -> None:
    rig = Rig()
    rig.remap()
    rig.pulse(1)
    assert rig.pic.acknowledge() == 0x21
    rig.outb(MASTER_CMD, EOI)
    rig.pulse(0)
    assert rig.pic.acknowledge() == 0x20
    rig.outb(MASTER_CMD, EOI)
    assert rig.pic.pending_vector() is None
    assert (rig.isr(MASTER_CMD), rig.irr(MASTER_CMD)) == (0, 0)


def test_mask_holds_a_request_back_until_unmasked() -> None:
    rig = Rig()
    rig.remap(masks=(0x02, 0x00))
    rig.pulse(1)
    assert rig.pic.pending_vector() is None
    assert rig.irr(MASTER_CMD) == 0x02  # latched all the same
    assert rig.wakeups == 0
    rig.outb(MASTER_DATA, 0x00)
    assert rig.pic.pending_vector() == 0x21
    assert rig.wakeups == 1


def test_requests_are_served_in_priority_order() -> None:
    rig = Rig()
    rig.remap()
    for irq in (5, 3, 12, 1):
        rig.pulse(irq)
    served = []
    while (vector := rig.pic.pending_vector()) is not None:
        assert rig.pic.acknowledge() == vector
        served.append(vector)
        if vector >= 0x28:
            rig.outb(SLAVE_CMD, EOI)
        rig.outb(MASTER_CMD, EOI)
    # IR0-1 beat the cascade on IR2 (so IRQ 8-15), which beats IR3-7.
    assert served == [0x21, 0x2C, 0x23, 0x25]


def test_in_service_blocks_equal_and_lower_but_not_higher() -> None:
    rig = Rig()
    rig.remap()
    rig.pulse(3)
    assert rig.pic.acknowledge() == 0x23
    rig.pulse(4)
    rig.pulse(3)
    assert rig.pic.pending_vector() is None  # 3 is in service: 3 and 4 wait
    rig.pulse(1)
    assert rig.pic.acknowledge() == 0x21  # a higher level nests
    assert rig.isr(MASTER_CMD) == 0x0A
    rig.outb(MASTER_CMD, EOI)  # non-specific: clears the highest, IR1
    assert rig.isr(MASTER_CMD) == 0x08
    assert rig.pic.pending_vector() is None
    rig.outb(MASTER_CMD, EOI)
    assert rig.pic.acknowledge() == 0x23  # the second IRQ 3
    rig.outb(MASTER_CMD, EOI)
    assert rig.pic.acknowledge() == 0x24


def test_cascade_delivers_slave_vectors_and_needs_both_eois() -> None:
    rig = Rig()
    rig.remap()
    rig.pulse(12)
    assert rig.irr(MASTER_CMD) == 0x04  # the slave's INT on IR2
    assert rig.pic.acknowledge() == 0x2C
    assert (rig.isr(MASTER_CMD), rig.isr(SLAVE_CMD)) == (0x04, 0x10)
    rig.outb(SLAVE_CMD, EOI)
    rig.pulse(13)
    assert rig.pic.pending_vector() is None  # the master still has IR2 in service
    rig.outb(MASTER_CMD, EOI)
    assert rig.pic.acknowledge() == 0x2D
    # The other way round: an EOI to the master alone leaves the slave blocked.
    rig.outb(MASTER_CMD, EOI)
    rig.pulse(14)
    assert rig.pic.pending_vector() is None  # slave: 13 in service holds 14
    rig.outb(SLAVE_CMD, EOI)
    assert rig.pic.acknowledge() == 0x2E


def test_a_second_slave_request_is_not_lost_behind_the_first() -> None:
    rig = Rig()
    rig.remap(icw4=ICW4_8086_AEOI)
    rig.pulse(9)
    rig.pulse(10)
    assert rig.pic.acknowledge() == 0x29
    assert rig.pic.acknowledge() == 0x2A  # the slave's INT stayed up through the INTA
    assert rig.pic.pending_vector() is None


def test_edge_mode_needs_a_new_rising_edge() -> None:
    rig = Rig()
    rig.remap()
    rig.pic.set_irq(3, True)
    assert rig.pic.acknowledge() == 0x23
    rig.outb(MASTER_CMD, EOI)
    rig.pic.set_irq(3, True)  # still high: no edge
    assert rig.pic.pending_vector() is None
    rig.pic.set_irq(3, False)
    rig.pic.set_irq(3, True)
    assert rig.pic.pending_vector() == 0x23


def test_level_mode_follows_the_line() -> None:
    rig = Rig()
    rig.remap(icw1=ICW1_LEVEL)
    rig.pic.set_irq(3, True)
    assert rig.pic.acknowledge() == 0x23
    rig.outb(MASTER_CMD, EOI)
    assert rig.pic.pending_vector() == 0x23  # still high: asks again
    rig.pic.set_irq(3, False)
    assert rig.pic.pending_vector() is None
    assert rig.irr(MASTER_CMD) == 0


def test_level_request_gone_before_inta_is_spurious_irq7() -> None:
    rig = Rig()
    rig.remap(icw1=ICW1_LEVEL)
    rig.pic.set_irq(5, True)
    assert rig.pic.pending_vector() == 0x25
    rig.pic.set_irq(5, False)
    assert rig.pic.acknowledge() == 0x27
    assert rig.isr(MASTER_CMD) == 0  # a spurious IR7 is not put in service


def test_spurious_irq7_when_nothing_is_pending_or_it_was_masked() -> None:
    rig = Rig()
    rig.remap()
    assert rig.pic.acknowledge() == 0x27
    rig.pulse(3)
    rig.outb(MASTER_DATA, 0x08)  # masked between INTR and INTA
    assert rig.pic.acknowledge() == 0x27
    assert rig.isr(MASTER_CMD) == 0
    rig.outb(MASTER_DATA, 0x00)
    assert rig.pic.acknowledge() == 0x23  # the request itself was kept


def test_spurious_irq15_when_the_slave_request_vanished() -> None:
    rig = Rig()
    rig.remap()
    rig.pulse(12)
    rig.outb(SLAVE_DATA, 0x10)  # masked on the slave after the master latched IR2
    assert rig.pic.pending_vector() == 0x2F
    assert rig.pic.acknowledge() == 0x2F
    # Linux's rule: EOI the master only, the slave had nothing in service.
    assert (rig.isr(MASTER_CMD), rig.isr(SLAVE_CMD)) == (0x04, 0x00)


def test_auto_eoi_sets_no_in_service_bit() -> None:
    rig = Rig()
    rig.remap(icw4=ICW4_8086_AEOI)
    rig.pulse(1)
    assert rig.pic.acknowledge() == 0x21
    assert rig.isr(MASTER_CMD) == 0
    rig.pulse(6)
    assert rig.pic.acknowledge() == 0x26  # no EOI was needed


def test_ocw3_selects_what_the_command_port_reads() -> None:
    rig = Rig()
    rig.remap(masks=(0xFF, 0xFF))
    rig.pulse(5)
    rig.outb(MASTER_DATA, 0x00)
    rig.pulse(1)
    assert rig.inb(MASTER_CMD) == 0x22  # IRR is the default after ICW1
    rig.pic.acknowledge()
    rig.outb(MASTER_CMD, READ_ISR)
    assert rig.inb(MASTER_CMD) == 0x02
    assert rig.inb(MASTER_CMD) == 0x02  # the choice sticks
    rig.outb(MASTER_CMD, 0x08)  # OCW3 without RR: selection unchanged
    assert rig.inb(MASTER_CMD) == 0x02
    rig.outb(MASTER_CMD, READ_IRR)
    assert rig.inb(MASTER_CMD) == 0x20
    assert rig.inb(MASTER_DATA) == 0x00  # the data port reads IMR either way


def test_icw1_restarts_the_chip() -> None:
    rig = Rig()
    rig.remap(masks=(0x30, 0x00))
    rig.pic.set_irq(3, True)
    rig.pic.acknowledge()
    rig.pic.set_irq(4, True)  # latched, masked
    rig.remap(master=0x40, slave=0x48, masks=(0x00, 0x00))
    assert (rig.isr(MASTER_CMD), rig.irr(MASTER_CMD)) == (0, 0)
    assert rig.pic.pending_vector() is None  # lines still high: no new edge
    rig.pic.set_irq(4, False)
    rig.pic.set_irq(4, True)
    assert rig.pic.acknowledge() == 0x44


def test_single_mode_master_answers_ir2_itself() -> None:
    rig = Rig()
    rig.outb(MASTER_CMD, ICW1_SINGLE)
    rig.outb(MASTER_DATA, 0x50)
    rig.outb(MASTER_DATA, ICW4_8086)  # no ICW3 in single mode
    rig.outb(MASTER_DATA, 0x00)
    rig.pulse(2)
    assert rig.pic.acknowledge() == 0x52


def test_rotation_commands_move_the_lowest_priority() -> None:
    rig = Rig()
    rig.remap()
    rig.outb(MASTER_CMD, 0xC3)  # set priority: IR3 lowest, so IR4 highest
    rig.pulse(1)
    rig.pulse(5)
    assert rig.pic.acknowledge() == 0x25
    rig.outb(MASTER_CMD, 0xA0)  # rotate on non-specific EOI: IR5 goes last
    assert rig.isr(MASTER_CMD) == 0
    rig.pulse(4)
    assert rig.pic.acknowledge() == 0x21  # order 6 7 0 1 2 3 4 5: IR1 beats IR4
    rig.outb(MASTER_CMD, 0xC7)  # back to the default order
    rig.outb(MASTER_CMD, EOI)
    rig.pulse(0)
    assert rig.pic.acknowledge() == 0x20


def test_special_mask_mode_lets_lower_levels_in() -> None:
    rig = Rig()
    rig.remap()
    rig.pulse(1)
    assert rig.pic.acknowledge() == 0x21
    rig.pulse(5)
    assert rig.pic.pending_vector() is None
    rig.outb(MASTER_DATA, 0x02)  # mask the level in service ...
    assert rig.pic.pending_vector() is None  # ... which alone changes nothing
    rig.outb(MASTER_CMD, 0x68)  # OCW3: set special mask mode
    assert rig.pic.acknowledge() == 0x25
    rig.outb(MASTER_CMD, 0x48)  # reset special mask mode
    rig.outb(MASTER_CMD, SPECIFIC_EOI + 5)
    rig.pulse(6)
    assert rig.pic.pending_vector() is None  # IR1 blocks again


def test_special_fully_nested_master_lets_a_higher_slave_request_through() -> None:
    rig = Rig()
    rig.remap()
    rig.outb(MASTER_CMD, ICW1_EDGE_CASCADE_ICW4)  # the master again, with SFNM
    rig.outb(MASTER_DATA, 0x20)
    rig.outb(MASTER_DATA, 0x04)
    rig.outb(MASTER_DATA, 0x11)
    rig.outb(MASTER_DATA, 0x00)
    rig.pulse(14)
    assert rig.pic.acknowledge() == 0x2E
    rig.pulse(12)
    assert rig.pic.acknowledge() == 0x2C  # IR2 in service does not hold it off
    rig.pulse(15)
    assert rig.pic.pending_vector() is None  # the slave's own ISR still ranks it


def test_rotate_in_auto_eoi_mode() -> None:
    rig = Rig()
    rig.remap(icw4=ICW4_8086_AEOI)
    rig.outb(MASTER_CMD, 0x80)  # set rotate in AEOI
    rig.pulse(1)
    assert rig.pic.acknowledge() == 0x21  # IR1 now lowest, IR2 highest
    rig.pulse(0)
    rig.pulse(3)
    assert rig.pic.acknowledge() == 0x23
    rig.outb(MASTER_CMD, 0x00)  # clear rotate in AEOI: IR3 stays lowest
    assert rig.pic.acknowledge() == 0x20
    rig.pulse(0)
    rig.pulse(1)
    assert rig.pic.acknowledge() == 0x20  # IR0 did not go last


def test_poll_command_acknowledges_through_the_command_port() -> None:
    rig = Rig()
    rig.remap()
    rig.outb(MASTER_CMD, 0x0C)
    assert rig.inb(MASTER_CMD) == 0x00  # nothing pending
    rig.pulse(6)
    rig.outb(MASTER_CMD, 0x0C)
    assert rig.inb(MASTER_CMD) == 0x86
    assert rig.isr(MASTER_CMD) == 0x40
    assert rig.inb(MASTER_CMD) == 0x00  # one read only, then IRR again


def test_on_change_fires_when_intr_rises_and_may_call_back() -> None:
    rig = Rig()
    rig.remap()
    seen: list[int | None] = []
    rig.pic.on_change = lambda: seen.append(rig.pic.pending_vector())

    def console_thread() -> None:
        rig.pulse(4)  # the UART's IRQ, raised off the vCPU thread

    thread = threading.Thread(target=console_thread)
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive()  # the callback ran outside the lock
    assert seen == [0x24]
    rig.pulse(6)  # INTR is already up: no second wake-up
    assert seen == [0x24]
    rig.pic.acknowledge()
    rig.outb(MASTER_CMD, EOI)  # the EOI lets IRQ 6 raise INTR again
    assert seen == [0x24, 0x26]


def test_set_irq_from_another_thread_waits_for_the_lock() -> None:
    # White-box: a register access in progress on the vCPU thread holds the
    # lock, and the console thread's set_irq must wait for it, not interleave.
    rig = Rig()
    rig.remap()
    thread = threading.Thread(target=rig.pulse, args=(4,))
    with rig.pic._lock:
        thread.start()
        thread.join(timeout=0.2)
        assert thread.is_alive()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert rig.pic.pending_vector() == 0x24


def test_wide_read_splits_into_command_and_data_ports() -> None:
    rig = Rig()
    rig.remap(masks=(0x5A, 0x00))
    rig.pulse(0)
    assert rig.bus.read(MASTER_CMD, 2) == 0x5A01


def test_state_restores_into_a_fresh_pair() -> None:
    rig = Rig()
    rig.remap(master=0x40, slave=0x48, masks=(0x10, 0x00))
    rig.pulse(12)
    rig.pic.acknowledge()
    rig.pulse(3)
    rig.pulse(4)
    rig.outb(MASTER_CMD, READ_ISR)
    saved = rig.pic.state()
    assert isinstance(saved, PicState)
    assert saved != PicState()
    other = Rig()
    other.pic.restore(saved)
    assert other.pic.state() == saved
    assert other.inb(MASTER_CMD) == 0x04  # ISR selected, IR2 in service
    assert other.inb(MASTER_DATA) == 0x10
    assert other.pic.pending_vector() is None  # IR3 waits behind IR2
    other.outb(SLAVE_CMD, EOI)
    other.outb(MASTER_CMD, EOI)
    assert other.pic.acknowledge() == 0x43
    assert other.wakeups == 1


@pytest.mark.parametrize("irq", [-1, 16])
def test_irq_numbers_outside_0_to_15_are_refused(irq: int) -> None:
    with pytest.raises(ValueError, match="IRQ"):
        Pic8259Pair().set_irq(irq, True)
