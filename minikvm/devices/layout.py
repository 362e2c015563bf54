"""Where the PC platform's devices sit in port space (ABI.md is the contract)."""

from __future__ import annotations

from typing import NamedTuple


class PortRange(NamedTuple):
    base: int
    length: int


COM1 = PortRange(0x3F8, 8)
COM1_IRQ = 4
HYPERCALL = PortRange(0x500, 1)
I8042 = PortRange(0x60, 5)  # data at offset 0, status/command at offset 4 (0x61 between is not the i8042's)
SYSTEM_CONTROL = PortRange(0x61, 1)  # "port B": PIT channel 2 gate and output, speaker
VGA = PortRange(0x3C0, 0x20)  # colour VGA: attribute/sequencer/DAC/graphics, CRTC 0x3D4/0x3D5, status 0x3DA
FAST_A20 = PortRange(0x92, 1)
DEBUG_EXIT = PortRange(0xF4, 4)  # as QEMU's isa-debug-exit,iobase=0xf4,iosize=4

# Ports an OS probes even on a machine without these chips; a NullDevice
# answers them when the machine has no real model there.
PIC_MASTER = PortRange(0x20, 2)
PIC_SLAVE = PortRange(0xA0, 2)
PIT = PortRange(0x40, 4)
CMOS = PortRange(0x70, 2)
POST = PortRange(0x80, 1)  # POST codes; also written just to wait an I/O cycle
