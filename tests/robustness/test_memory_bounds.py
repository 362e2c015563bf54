"""Guest memory from the VMM's side: every access path is bounds-checked.

DESIGN.md: GuestMemory is the only way to touch guest RAM, and an access
outside it raises GuestMemoryError(addr, length). These tests go through
every path that reads or writes guest RAM on the VMM's behalf — the
accessors themselves, the device that reads RAM (the VGA text screen), the
loaders (flat, --paging layout, Multiboot a.out kludge and ELF, the page
table builders), and the debugger paths (the stop report's code read, the
explainer's linear reads, the page walker) — with addresses and lengths
outside RAM, and check that the access is refused (GuestMemoryError, or a
loader's ImageError raised before anything is written) and never reaches
host memory. (There is no GDB stub yet: minikvm/debug/gdbstub.py does not
exist, so its memory commands are not covered here.)
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minikvm.arch.x86.paging import identity_map_long, long_mode_tables_size, map_32bit, map_pae
from minikvm.arch.x86.registers import CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME
from minikvm.arch.x86.state import Mode
from minikvm.arch.x86.walk import Fault, translate
from minikvm.boot import layout
from minikvm.boot.errors import ImageError
from minikvm.boot.flat import load_flat
from minikvm.boot.multiboot import load_multiboot
from minikvm.boot.paging_layout import load_paging_abi
from minikvm.boot.select import BootRequest, load_guest
from minikvm.debug.explain import EXPLAINED, Explainer, context_listing, explain
from minikvm.devices.vga import TEXT_BASE, TEXT_BYTES, TEXT_WINDOW_END, VgaCrtc, read_screen
from minikvm.emu.cpu import Emu
from minikvm.emu.delivery import ChainLink, Event
from minikvm.kvm.uapi import kvm_regs, kvm_sregs
from minikvm.machine import CpuSnapshot, GuestSpec, Machine, MachineConfig, RunResult
from minikvm.memory import GuestMemory, GuestMemoryError
from minikvm.runloop import ExitStats
from minikvm.stop import StopKind, StopReason

from .randguest import RUN_SLACK, kvm_can_run, make_accel

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
KIB, MIB = 1024, 1024 * 1024
LAYOUT = [(0, 0x2000), (0x10000, 0x1000)]  # two regions with a hole between them
SIZE = 0x11000  # one past the last byte


@pytest.fixture
def memory() -> Iterator[GuestMemory]:
    mem = GuestMemory(LAYOUT)
    mem.fill(0, 0x2000, 0x5A)
    mem.fill(0x10000, 0x1000, 0xA5)
    yield mem
    mem.close()


def snapshot(mem: GuestMemory) -> bytes:
    return b"".join(mem.read(region.guest_addr, region.size) for region in mem.regions)


# --- the accessors ---------------------------------------------------------------------------

OUTSIDE = [  # (address, length): every way to miss a region
    (0x2000, 1), (0x1FFF, 2), (0x1FF8, 9), (0xFFFF, 2), (0x8000, 1), (SIZE, 1), (SIZE - 1, 2), (0, SIZE),
    (0, 0x2001), (-1, 1), (-0x1000, 0x2000), (0, -1), (0x100, -0x100), (1 << 32, 1), (1 << 63, 8),
    ((1 << 64) - 1, 1), (1 << 64, 4), (0x10000, 1 << 40),
]

ACCESSORS: dict[str, Callable[[GuestMemory, int, int], object]] = {
    "read": lambda m, a, n: m.read(a, n),
    "write": lambda m, a, n: m.write(a, b"\xee" * max(n, 1) if n < (1 << 20) else b"\xee" * 0x1001),
    "fill": lambda m, a, n: m.fill(a, n if n < (1 << 20) else 0x1001, 0xEE),
    "read_u8": lambda m, a, n: m.read_u8(a),
    "read_u16": lambda m, a, n: m.read_u16(a),
    "read_u32": lambda m, a, n: m.read_u32(a),
    "read_u64": lambda m, a, n: m.read_u64(a),
    "write_u8": lambda m, a, n: m.write_u8(a, 0xEE),
    "write_u16": lambda m, a, n: m.write_u16(a, 0xEEEE),
    "write_u32": lambda m, a, n: m.write_u32(a, 0xEEEEEEEE),
    "write_u64": lambda m, a, n: m.write_u64(a, 0xEEEEEEEEEEEEEEEE),
}
WIDTH = {"read_u8": 1, "read_u16": 2, "read_u32": 4, "read_u64": 8,
         "write_u8": 1, "write_u16": 2, "write_u32": 4, "write_u64": 8}


def effective_length(accessor: str, length: int) -> int:
    if accessor in WIDTH:
        return WIDTH[accessor]
    if accessor == "write":
        return max(length, 1) if length < (1 << 20) else 0x1001
    if accessor == "fill":
        return length if length < (1 << 20) else 0x1001
    return length


def inside(regions: list[tuple[int, int]], addr: int, length: int) -> bool:
    return length >= 0 and any(base <= addr and addr + length <= base + size for base, size in regions)


# Every accessor with every pair that is outside RAM for it (read_u8 at 0x1FFF is inside, say).
REFUSED = [(accessor, addr, length) for accessor in ACCESSORS for addr, length in OUTSIDE
           if not inside(LAYOUT, addr, effective_length(accessor, length))
           and not (accessor == "fill" and effective_length(accessor, length) <= 0)]


@pytest.mark.parametrize(("accessor", "addr", "length"), REFUSED,
                         ids=[f"{name}-{a:#x}+{n:#x}" for name, a, n in REFUSED])
def test_every_accessor_refuses_what_is_outside_ram(memory: GuestMemory, accessor: str, addr: int,
                                                      length: int) -> None:
    span = effective_length(accessor, length)
    before = snapshot(memory)
    with pytest.raises(GuestMemoryError) as info:
        ACCESSORS[accessor](memory, addr, length)
    assert info.value.addr == addr, "the error names the address asked for"
    assert info.value.length == span, "the error names the length asked for"
    assert f"{addr:#x}" in str(info.value) or addr < 0
    assert snapshot(memory) == before, "a refused write changed guest RAM"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(addr=st.one_of(st.integers(-0x100, SIZE + 0x100), st.integers(-(1 << 64), 1 << 65)),
       length=st.one_of(st.integers(-8, 0x3000), st.integers(-(1 << 64), 1 << 64)))
def test_any_access_is_inside_a_region_or_refused(memory: GuestMemory, addr: int, length: int) -> None:
    before = snapshot(memory)
    ok = inside(LAYOUT, addr, length)
    try:
        data = memory.read(addr, length)
    except GuestMemoryError as err:
        assert not ok and (err.addr, err.length) == (addr, length)
    else:
        assert ok and len(data) == length
    if 0 <= length <= 0x3000:
        try:
            memory.write(addr, b"\x11" * length)
        except GuestMemoryError:
            assert not ok
            assert snapshot(memory) == before
        else:
            assert ok


def test_a_closed_memory_refuses_everything() -> None:
    """A device or report reading RAM after the machine was torn down gets an error, not freed memory."""
    mem = GuestMemory([(0, 0x10000)])
    mem.close()
    for access in (lambda: mem.read(0, 1), lambda: mem.write(0, b"x"), lambda: mem.read_u32(0x100)):
        with pytest.raises(GuestMemoryError):
            access()
    assert not mem.contains(0)


# --- devices: the VGA text screen reads guest RAM ----------------------------------------------


def test_the_screen_reader_refuses_ram_that_does_not_reach_the_text_buffer() -> None:
    crtc = VgaCrtc()
    scrolled = VgaCrtc()
    for index, value in ((0x0C, 0x04), (0x0D, 0x00)):  # start address 0x400: the screen at 0xB8800
        scrolled.write(0x14, 1, index)
        scrolled.write(0x15, 1, value)
    for size, controller in ((64 * KIB, crtc), (TEXT_BASE, crtc), (TEXT_BASE + 0x1000, scrolled)):
        mem = GuestMemory([(0, size)])
        try:
            with pytest.raises(GuestMemoryError):
                read_screen(mem.read, controller)
        finally:
            mem.close()


def emu_machine(image: bytes, mode: Mode, memory: int, **spec: object) -> Machine:
    return Machine(MachineConfig(GuestSpec("bounds", "<bounds>", image, mode, memory, **spec)),  # type: ignore[arg-type]
                   Emu(), lambda data: None)


@settings(max_examples=60, deadline=None)
@given(size=st.sampled_from([64 * KIB, 640 * KIB, TEXT_BASE, TEXT_BASE + 0x1000, TEXT_WINDOW_END - 0x1000,
                             TEXT_WINDOW_END, 1 * MIB]),
       writes=st.lists(st.tuples(st.integers(0, 0x1F), st.integers(0, 0xFF), st.integers(0, 0xFF)), max_size=12))
def test_machine_screen_never_reads_outside_ram(size: int, writes: list[tuple[int, int, int]]) -> None:
    """Whatever the guest programs into the CRTC (start address, cursor), the screen is read inside RAM."""
    machine = emu_machine(b"\xf4", Mode.REAL, size)
    try:
        for offset, index, value in writes:  # index/data pairs, as a guest's OUT 0x3D4/0x3D5 would
            machine.vga.write(0x14, 1, index)
            machine.vga.write(0x15, 1, value)
            machine.vga.write(offset, 1, value)
        screen = machine.screen()
        reaches = size >= TEXT_WINDOW_END
        assert (screen is not None) == reaches
        if screen is not None:
            assert len(screen.raw) == TEXT_BYTES
    finally:
        machine.close()


# --- loaders ---------------------------------------------------------------------------------


def zeroed(size: int) -> GuestMemory:
    return GuestMemory([(0, size)])


LOADS = {
    "real-image-past-the-end": lambda m: load_flat(m, bytes(0x1000), Mode.REAL, "x", load=m.size - 0x800),
    "real-load-beyond-ram": lambda m: load_flat(m, b"\xf4", Mode.REAL, "x", load=m.size),
    "real-load-far-beyond": lambda m: load_flat(m, b"\xf4", Mode.REAL, "x", load=1 << 40),
    "real-image-bigger-than-ram": lambda m: load_flat(m, bytes(m.size + 1), Mode.REAL, "x"),
    "protected-image-past-the-end": lambda m: load_flat(m, bytes(0x2000), Mode.PROTECTED, "x", load=m.size - 0x1000),
    "protected-load-beyond-ram": lambda m: load_flat(m, b"\xf4", Mode.PROTECTED, "x", load=m.size + 0x1000),
    "protected-load-at-4g": lambda m: load_flat(m, b"\xf4", Mode.PROTECTED, "x", load=1 << 32),
    "long-image-over-the-tables": lambda m: load_flat(m, bytes(m.size - 0x1000), Mode.LONG, "x"),
    "long-load-beyond-ram": lambda m: load_flat(m, b"\xf4", Mode.LONG, "x", load=m.size),
    "paging-image-past-the-end": lambda m: load_paging_abi(m, bytes(0x2000), "x", load=m.size - 0x1000),
    "paging-load-beyond-ram": lambda m: load_paging_abi(m, b"\xf4", "x", load=m.size + 0x1000),
    "paging-entry-beyond-ram": lambda m: load_paging_abi(m, b"\xf4", "x", entry=0x80000000 + m.size + 0x1000),
}


@pytest.mark.parametrize("case", list(LOADS))
@pytest.mark.parametrize("size", [0x104000, 2 * MIB], ids=["1M+16K", "2M"])
def test_loaders_refuse_images_beyond_ram_before_writing(case: str, size: int) -> None:
    mem = zeroed(size)
    try:
        with pytest.raises((ImageError, GuestMemoryError)):
            LOADS[case](mem)
        assert mem.read(0, size) == bytes(size), "the loader wrote guest RAM before refusing the image"
    finally:
        mem.close()


def kludge(load: int, size: int, bss: int, entry: int | None = None) -> bytes:
    """A Multiboot a.out-kludge kernel whose header says: load `size` bytes at `load`, bss up to `bss`."""
    flags = (1 << 16) | 0x3
    entry = load + 32 if entry is None else entry
    header = struct.pack("<IIIIIIII", 0x1BADB002, flags, -(0x1BADB002 + flags) & 0xFFFFFFFF,
                         load, load, load + size, bss, entry)
    return header + b"\xf4" * (size - len(header))


@pytest.mark.parametrize(("load", "size", "bss"), [
    (0x3FF000, 0x1000, 0x400100), (0x400000, 0x100, 0), (0x100000, 0x400000, 0), (0xFFFFF000, 0x100, 0),
    (0x100000, 0x100, 0xFFFFFFFF),
])
def test_multiboot_kludge_segments_beyond_ram_are_refused(load: int, size: int, bss: int) -> None:
    mem = zeroed(4 * MIB)
    try:
        with pytest.raises(ImageError, match=r"outside the guest's|the file has only|below the end"):
            load_multiboot(mem, kludge(load, size, bss), "k.bin")
        assert mem.read(0, 4 * MIB) == bytes(4 * MIB)
    finally:
        mem.close()


def test_multiboot_elf_segments_beyond_ram_are_refused() -> None:
    elf = REPO / "guests" / "build" / "mb_hello.elf"
    if not elf.exists():
        pytest.fail(f"{elf} is missing: run 'make guests'")
    mem = zeroed(256 * KIB)  # the kernel is linked at 1 MiB
    try:
        with pytest.raises(ImageError, match="outside the guest's"):
            load_multiboot(mem, elf.read_bytes(), str(elf))
        assert mem.read(0, 256 * KIB) == bytes(256 * KIB)
    finally:
        mem.close()


@settings(max_examples=300, deadline=None)
@given(mode=st.sampled_from([Mode.REAL, Mode.PROTECTED, Mode.PAGING, Mode.LONG]),
       size=st.sampled_from([64 * KIB, 0x104000, 2 * MIB]),
       load=st.one_of(st.none(), st.integers(0, 3 * MIB), st.integers(0, 1 << 64)),
       entry=st.one_of(st.none(), st.integers(0, 1 << 33)),
       length=st.integers(1, 0x30000))
def test_flat_loads_fit_in_ram_or_are_refused(mode: Mode, size: int, load: int | None, entry: int | None,
                                              length: int) -> None:
    mem = zeroed(size)
    image = bytes([0xF4]) * length
    try:
        try:
            state = load_guest(mem, BootRequest(image, "x", mode, load, entry))
        except (ImageError, GuestMemoryError):
            return
        where = layout.REAL_LOAD if mode is Mode.REAL and load is None else load
        where = (layout.PAGING_LOAD if mode is Mode.PAGING else layout.PM_LOAD) if where is None else where
        assert mem.read(where, length) == image
        assert state.mode is mode
    finally:
        mem.close()


@settings(max_examples=300, deadline=None)
@given(header_addr=st.integers(0, 1 << 32), load=st.integers(0, 1 << 32), load_end=st.integers(0, 1 << 32),
       bss=st.integers(0, 1 << 32), entry=st.integers(0, 1 << 32), prefix=st.integers(0, 64).map(lambda n: n * 4),
       body=st.integers(0, 0x2000))
def test_multiboot_kludge_fields_never_reach_outside_ram(header_addr: int, load: int, load_end: int, bss: int,
                                                         entry: int, prefix: int, body: int) -> None:
    flags = (1 << 16) | 0x3
    fields = [x & 0xFFFFFFFF for x in (header_addr, load, load_end, bss, entry)]
    header = struct.pack("<III5I", 0x1BADB002, flags, -(0x1BADB002 + flags) & 0xFFFFFFFF, *fields)
    mem = zeroed(2 * MIB)
    try:
        try:
            load_multiboot(mem, bytes(prefix) + header + b"\xf4" * body, "k.bin")
        except (ImageError, GuestMemoryError):
            pass
    finally:
        mem.close()


@pytest.mark.parametrize("build", ["32-bit", "pae", "long"])
def test_page_table_builders_refuse_tables_beyond_ram(build: str) -> None:
    mem = zeroed(64 * KIB)
    try:
        with pytest.raises(GuestMemoryError):
            if build == "32-bit":
                map_32bit(mem, 0xF000, [0x10000], [(0, 0, 0x10000)])
            elif build == "pae":
                map_pae(mem, 0xF000, [0xE000], [(0, 0, 0x10000)], tables=[0x10000])
            else:
                identity_map_long(mem, 0x10000 - long_mode_tables_size(1 << 30) + 0x1000, 1 << 30)
    finally:
        mem.close()


# --- the debugger side: stop reports and the explainer ---------------------------------------

OUT_OF_RAM = [0x40000, 0xFFFF0, 0xFFFFFFFF, 0xFFFFFFFFFFFFF000]


@pytest.mark.parametrize("linear", OUT_OF_RAM)
def test_the_stop_report_code_read_stays_inside_ram(linear: int) -> None:
    machine = emu_machine(b"\xf4", Mode.PROTECTED, 256 * KIB)
    try:
        assert machine._read_code(linear) == b""
        tail = machine._read_code(256 * KIB - 3)  # straddles the end: the bytes that exist
        assert len(tail) == 3
    finally:
        machine.close()


@pytest.mark.parametrize(("cr0", "cr4", "efer"), [
    (CR0_PE | CR0_PG, 0, 0), (CR0_PE | CR0_PG, CR4_PAE, 0), (CR0_PE | CR0_PG, CR4_PAE, EFER_LME | EFER_LMA)],
    ids=["32-bit", "pae", "4-level"])
@pytest.mark.parametrize("cr3", [0x100000, 0xFFFFF000, 0x7FFFFFFFF000])
def test_the_page_walker_reports_tables_outside_ram(cr0: int, cr4: int, efer: int, cr3: int) -> None:
    mem = zeroed(64 * KIB)
    try:
        walk = translate(mem.read, cr0, cr3, cr4, efer, 0x1234)
        assert walk.fault is Fault.OUTSIDE_RAM and walk.phys is None
    finally:
        mem.close()


def snapshot_outside(mode: Mode, rip: int, cr0: int, cr3: int, cr4: int = 0, efer: int = 0,
                     chain: list[ChainLink] | None = None) -> CpuSnapshot:
    regs, sregs = kvm_regs(), kvm_sregs()
    regs.rip, regs.rsp = rip, 0xFFFFFFF0
    sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer, sregs.cr2 = cr0, cr3, cr4, efer, 0xDEAD0000
    sregs.cs.db = 1
    sregs.cs.l = int(bool(efer & EFER_LMA))
    sregs.idt.base, sregs.idt.limit = 0xFFFFF000, 0xFFF
    sregs.gdt.base, sregs.gdt.limit = 0xFFFF0000, 0x27
    return CpuSnapshot(mode, regs, sregs, b"", False, chain or [])


@pytest.mark.parametrize("kind", sorted(EXPLAINED, key=lambda k: k.value), ids=lambda k: k.value)
@pytest.mark.parametrize("paging", [False, True], ids=["flat", "paging-tables-outside-ram"])
def test_the_explainer_reports_state_that_points_outside_ram(kind: StopKind, paging: bool) -> None:
    """RIP, CR2, CR3, the IDT and the GDT all outside RAM: a report, no exception, no stray read."""
    machine = emu_machine(b"\xf4", Mode.PROTECTED, 256 * KIB)
    try:
        cr0 = CR0_PE | (CR0_PG if paging else 0)
        chain = [ChainLink(Event(14, 0x2), 0xFFFFFFF0, "could not be delivered: the IDT is outside RAM"),
                 ChainLink(Event(8, 0), 0xFFFFFFF0, "could not be delivered: triple fault")]
        snap = snapshot_outside(Mode.PROTECTED, 0xFFFFFFF0, cr0, 0x7FFFF000,
                                chain=chain if kind is StopKind.TRIPLE_FAULT else None)
        result = RunResult("bounds", StopReason(kind, f"{kind.value} for the test", rip=0xFFFFFFF0), ExitStats(),
                           0.0, snap, accel="emu")
        lines = explain(machine, result)
        assert lines and all(isinstance(line, str) for line in lines)
        assert any("0xfffffff0" in line for line in lines), lines
        read = Explainer(machine, result, None)._read_linear(snap)
        assert read(0xFFFFFFF0, 4) == b""  # nothing there to show
        listing = context_listing(read, 0xFFFFFFF0, 32, None)
        assert listing == ["0xfffffff0: (memory not readable)"]
    finally:
        machine.close()


def test_the_explainer_linear_read_without_paging_is_the_checked_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The explainer reads through GuestMemory.read, which refuses what is outside RAM with
    GuestMemoryError; the explainer shows the bytes that exist and no more."""
    machine = emu_machine(b"\xf4", Mode.PROTECTED, 256 * KIB)
    try:
        snap = snapshot_outside(Mode.PROTECTED, 0x1000, CR0_PE, 0)
        result = RunResult("bounds", StopReason(StopKind.INTERNAL_ERROR, "x"), ExitStats(), 0.0, snap)
        refused: list[tuple[int, int]] = []
        checked_read = machine.memory.read

        def spy(addr: int, length: int) -> bytes:
            try:
                return checked_read(addr, length)
            except GuestMemoryError as err:
                refused.append((err.addr, err.length))
                raise

        monkeypatch.setattr(machine.memory, "read", spy)
        read = Explainer(machine, result, None)._read_linear(snap)
        assert read(0x1000, 1) == b"\xf4"
        assert read(256 * KIB, 1) == b"" and set(refused) == {(256 * KIB, 1)}
        refused.clear()
        assert read(256 * KIB - 1, 2) == checked_read(256 * KIB - 1, 1) and set(refused) == {(256 * KIB, 1)}
        assert read(1 << 40, 4) == b""  # beyond 32-bit linear addresses: not even asked for
    finally:
        machine.close()


# --- guests that point the CPU's own table reads outside RAM -------------------------------------

# 32-bit: lidt [idtr]; int 0x80   with the IDTR image {limit 0x7ff, base 0xFFFF0000} after the code.
LIDT_OUTSIDE_32 = bytes.fromhex("0f 01 1d 0a 10 00 00 cd 80 f4") + struct.pack("<HI", 0x7FF, 0xFFFF0000)
# 32-bit: lgdt [gdtr]; mov ax, 0x10; mov ds, ax; hlt   with the GDTR {limit 0x27, base 0x7FFF0000}.
LGDT_OUTSIDE_32 = bytes.fromhex("0f 01 15 10 10 00 00 66 b8 10 00 8e d8 f4 90 90") + struct.pack("<HI", 0x27,
                                                                                                  0x7FFF0000)
# 64-bit: lidt [idtr]; int 0x80   with {limit 0xfff, base 0x7FFF0000} (identity-mapped only over RAM).
LIDT_OUTSIDE_64 = bytes.fromhex("0f 01 1c 25 0b 10 00 00 cd 80 f4") + struct.pack("<HQ", 0xFFF, 0x7FFF0000)

TABLE_GUESTS = {
    "protected-idt-outside-ram": (Mode.PROTECTED, LIDT_OUTSIDE_32),
    "protected-gdt-outside-ram": (Mode.PROTECTED, LGDT_OUTSIDE_32),
    "long-idt-outside-ram": (Mode.LONG, LIDT_OUTSIDE_64),
}


@pytest.mark.parametrize("accel", ["kvm", "emu"])
@pytest.mark.parametrize("case", list(TABLE_GUESTS))
def test_descriptor_tables_outside_ram_end_the_guest_with_a_report(case: str, accel: str,
                                                                   request: pytest.FixtureRequest) -> None:
    from minikvm.machine import run_machines

    mode, image = TABLE_GUESTS[case]
    if accel == "kvm":
        request.getfixturevalue("kvm_required")
        if not kvm_can_run(mode.value):
            pytest.skip(f"this host's KVM cannot run {mode.label} (the software CPU case runs it)")
    root = make_accel(accel)
    machine = Machine(MachineConfig(GuestSpec(case, f"<{case}>", image, mode, 1 * MIB)), root,  # type: ignore[arg-type]
                      lambda data: None)
    try:
        started = time.monotonic()
        result = run_machines([machine], timeout=2)[0]
        elapsed = time.monotonic() - started
        lines = explain(machine, result)
    finally:
        machine.close()
        root.close()  # type: ignore[attr-defined]
    # A real PC reads all-ones from unbacked addresses, so a segment load from such a GDT may even succeed
    # (HLT). kvm-pvm spins inside KVM_RUN on it: the timeout must still end the run.
    assert result.stop.kind in (StopKind.TRIPLE_FAULT, StopKind.INTERNAL_ERROR, StopKind.ACCEL_ERROR, StopKind.HALT,
                                StopKind.TIMEOUT), result.stop
    assert not result.stop.message.startswith("internal error"), result.stop.message
    assert elapsed < 2 + RUN_SLACK
    assert lines or result.stop.kind in (StopKind.HALT, StopKind.TIMEOUT)
