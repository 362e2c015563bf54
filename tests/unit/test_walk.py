"""The software page walker against hand-written entries: every mode, every failure, the #PF error code.

Expected values come from the Intel SDM vol. 3A chapter 4, not from the walker.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from minikvm.arch.x86.registers import (
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    CR4_PSE,
    CR4_SMAP,
    CR4_SMEP,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
)
from minikvm.arch.x86.walk import (
    CR4_LA57,
    EXECUTE,
    PF_ID,
    PF_P,
    PF_RSVD,
    PF_US,
    PF_WR,
    READ,
    USER_EXECUTE,
    USER_READ,
    USER_WRITE,
    WRITE,
    Access,
    Fault,
    Op,
    PagingMode,
    Rights,
    Translation,
    describe_error_code,
    paging_mode,
    read_linear,
    translate,
)
from minikvm.memory import GuestMemory

PG = CR0_PE | CR0_PG
P, RW, US, PS, XD = 1, 2, 4, 0x80, 1 << 63
ALL = P | RW | US


@pytest.fixture
def ram() -> GuestMemory:
    mem = GuestMemory([(0, 4 << 20)])
    yield mem
    mem.close()


@dataclass
class Chain:
    """A complete 4 KiB walk for `vaddr` to physical page 0x5000, every entry P|RW|US (PAE PDPTE: P)."""

    mem: GuestMemory
    mode: PagingMode
    cr3: int
    vaddr: int
    slots: dict[str, int]  # level name → address of the entry this walk uses
    size: int

    @property
    def cr4(self) -> int:
        return {PagingMode.BIT32: 0, PagingMode.PAE: CR4_PAE, PagingMode.LEVEL4: CR4_PAE,
                PagingMode.LEVEL5: CR4_PAE | CR4_LA57}[self.mode]

    @property
    def efer(self) -> int:
        return EFER_LME | EFER_LMA if self.mode in (PagingMode.LEVEL4, PagingMode.LEVEL5) else 0

    def get(self, level: str) -> int:
        return int.from_bytes(self.mem.read(self.slots[level], self.size), "little")

    def set(self, level: str, value: int) -> None:
        self.mem.write(self.slots[level], value.to_bytes(self.size, "little"))

    def walk(self, access: Access = READ, cr0: int = PG, cr4: int = 0, efer: int = 0, **kw: int) -> Translation:
        return translate(self.mem.read, cr0, self.cr3, self.cr4 | cr4, self.efer | efer, self.vaddr, access, **kw)


def build(mem: GuestMemory, mode: PagingMode) -> Chain:
    """Tables from 0x10000 on, one page each; the root first."""
    if mode is PagingMode.BIT32:
        levels, size, vaddr = [("PDE", 22, 0x3FF), ("PTE", 12, 0x3FF)], 4, 0x80001234
    elif mode is PagingMode.PAE:
        levels, size, vaddr = [("PDPTE", 30, 3), ("PDE", 21, 0x1FF), ("PTE", 12, 0x1FF)], 8, 0x80001234
    else:
        levels = [("PML4E", 39, 0x1FF), ("PDPTE", 30, 0x1FF), ("PDE", 21, 0x1FF), ("PTE", 12, 0x1FF)]
        vaddr = (3 << 39) | (5 << 30) | (7 << 21) | (9 << 12) | 0x234
        if mode is PagingMode.LEVEL5:
            levels.insert(0, ("PML5E", 48, 0x1FF))
            vaddr |= 2 << 48
        size = 8
    slots = {}
    for number, (name, shift, mask) in enumerate(levels):
        table = 0x10000 + number * 0x1000
        slots[name] = table + ((vaddr >> shift) & mask) * size
        following = 0x5000 if name == "PTE" else table + 0x1000
        flags = P if (mode is PagingMode.PAE and name == "PDPTE") else ALL
        mem.write(slots[name], (following | flags).to_bytes(size, "little"))
    return Chain(mem, mode, 0x10000, vaddr, slots, size)


MODES = [PagingMode.BIT32, PagingMode.PAE, PagingMode.LEVEL4, PagingMode.LEVEL5]
LEVELS = {PagingMode.BIT32: ["PDE", "PTE"], PagingMode.PAE: ["PDPTE", "PDE", "PTE"],
          PagingMode.LEVEL4: ["PML4E", "PDPTE", "PDE", "PTE"],
          PagingMode.LEVEL5: ["PML5E", "PML4E", "PDPTE", "PDE", "PTE"]}


# --- modes and successful walks --------------------------------------------------------------------------


@pytest.mark.parametrize(("cr0", "cr4", "efer", "mode"), [
    (CR0_PE, CR4_PAE, EFER_LME, PagingMode.OFF),
    (PG, 0, 0, PagingMode.BIT32),
    (PG, CR4_PSE, 0, PagingMode.BIT32),
    (PG, CR4_PAE, 0, PagingMode.PAE),
    (PG, CR4_PAE, EFER_LME, PagingMode.PAE),  # LME without LMA: long mode is not active
    (PG, CR4_PAE, EFER_LME | EFER_LMA, PagingMode.LEVEL4),
    (PG, CR4_PAE | CR4_LA57, EFER_LME | EFER_LMA, PagingMode.LEVEL5),
])
def test_control_registers_select_the_paging_mode(cr0: int, cr4: int, efer: int, mode: PagingMode) -> None:
    assert paging_mode(cr0, cr4, efer) is mode


def test_paging_off_is_the_identity(ram: GuestMemory) -> None:
    result = translate(ram.read, CR0_PE, 0xDEAD000, 0, 0, 0x80001234, WRITE)
    assert (result.ok, result.phys, result.entries, result.mode) == (True, 0x80001234, (), PagingMode.OFF)
    assert result.describe() == "paging off: linear 0x80001234 is physical 0x80001234"


@pytest.mark.parametrize("mode", MODES)
def test_a_full_4k_walk_in_each_mode(ram: GuestMemory, mode: PagingMode) -> None:
    chain = build(ram, mode)
    result = chain.walk(USER_WRITE)
    assert result.ok and result.mode is mode
    assert (result.phys, result.page_size) == (0x5234, 0x1000)
    assert [e.level for e in result.entries] == LEVELS[mode]
    assert [e.addr for e in result.entries] == [chain.slots[name] for name in LEVELS[mode]]
    assert [e.value for e in result.entries] == [chain.get(name) for name in LEVELS[mode]]
    assert all(e.size == chain.size for e in result.entries)
    assert result.rights == Rights(writable=True, user=True, executable=True)


def test_entries_name_their_index(ram: GuestMemory) -> None:
    result = build(ram, PagingMode.LEVEL4).walk()
    assert [e.index for e in result.entries] == [3, 5, 7, 9]


def test_describe_a_successful_walk(ram: GuestMemory) -> None:
    assert build(ram, PagingMode.BIT32).walk().describe() == (
        "PDE[0x200]@0x10800=0x00011007 → PTE[0x001]@0x11004=0x00005007 → 0x5234 "
        "(4 KiB page; user, writable, executable)")


def test_describe_matches_the_abi_example(ram: GuestMemory) -> None:
    ram.write_u32(0x100800, 0x00102003)  # PDE[0x200] → page table at 0x102000, PTE[1] left 0
    result = translate(ram.read, PG, 0x100000, 0, 0, 0x80001000, READ)
    assert result.describe() == (
        "PDE[0x200]@0x100800=0x00102003 → PTE[0x001]@0x102004=0x00000000: not present\n"
        "#PF error code 0x0: page not present, read, supervisor mode")


def test_describe_8_byte_entries_and_a_rights_failure(ram: GuestMemory) -> None:
    chain = build(ram, PagingMode.PAE)
    chain.set("PDE", 0x12000 | P | RW)
    assert chain.walk(USER_WRITE).describe() == (
        "PDPTE[0x002]@0x10010=0x0000000000011001 → PDE[0x000]@0x11000=0x0000000000012003 → "
        "PTE[0x001]@0x12008=0x0000000000005007: user-mode access to a supervisor page (PDE U/S=0)\n"
        "#PF error code 0x7: protection violation, write, user mode")


# --- not present ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "level"), [(m, name) for m in MODES for name in LEVELS[m]])
def test_not_present_at_each_level(ram: GuestMemory, mode: PagingMode, level: str) -> None:
    chain = build(ram, mode)
    chain.set(level, chain.get(level) & ~P)
    result = chain.walk(USER_WRITE)
    assert result.fault is Fault.NOT_PRESENT and result.phys is None
    assert result.culprit is not None and result.culprit.level == level
    assert result.entries[-1].level == level  # the walk stops there
    assert (result.vector, result.error_code) == (14, PF_WR | PF_US)  # P=0: no translation


def test_reserved_bits_are_not_checked_in_a_non_present_entry(ram: GuestMemory) -> None:
    chain = build(ram, PagingMode.LEVEL4)
    chain.set("PDE", XD | (0xFF << 13) | PS)  # reserved everywhere, but P=0
    result = chain.walk()
    assert result.fault is Fault.NOT_PRESENT and result.error_code == 0


@pytest.mark.parametrize(("access", "code"), [
    (READ, 0), (WRITE, PF_WR), (USER_READ, PF_US), (USER_WRITE, PF_WR | PF_US),
    (EXECUTE, 0),  # 32-bit paging without SMEP never reports I/D
    (USER_EXECUTE, PF_US),
])
def test_error_code_bits_follow_the_access(ram: GuestMemory, access: Access, code: int) -> None:
    chain = build(ram, PagingMode.BIT32)
    chain.set("PTE", 0)
    assert chain.walk(access).error_code == code


@pytest.mark.parametrize(("mode", "cr4", "efer", "reported"), [
    (PagingMode.BIT32, 0, 0, False),
    (PagingMode.BIT32, CR4_SMEP, 0, True),
    (PagingMode.PAE, 0, 0, False),
    (PagingMode.PAE, 0, EFER_NXE, True),
    (PagingMode.LEVEL4, 0, 0, False),
    (PagingMode.LEVEL4, 0, EFER_NXE, True),
    (PagingMode.LEVEL4, CR4_SMEP, 0, True),
])
def test_instruction_fetch_bit_only_with_smep_or_nxe(ram: GuestMemory, mode: PagingMode, cr4: int, efer: int,
                                                     reported: bool) -> None:
    chain = build(ram, mode)
    chain.set("PTE", 0)
    assert chain.walk(EXECUTE, cr4=cr4, efer=efer).error_code == (PF_ID if reported else 0)


# --- write protection ------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["PDE", "PTE"])
def test_supervisor_writes_to_read_only_pages_need_cr0_wp_to_fault(ram: GuestMemory, level: str) -> None:
    chain = build(ram, PagingMode.BIT32)
    chain.set(level, chain.get(level) & ~RW)
    without_wp = chain.walk(WRITE)
    assert without_wp.ok and without_wp.phys == 0x5234 and not without_wp.rights.writable
    with_wp = chain.walk(WRITE, cr0=PG | CR0_WP)
    assert with_wp.fault is Fault.WRITE_PROTECT and with_wp.culprit.level == level
    assert with_wp.error_code == PF_P | PF_WR
    assert chain.walk(READ, cr0=PG | CR0_WP).ok


@pytest.mark.parametrize("cr0", [PG, PG | CR0_WP])
def test_user_writes_to_read_only_pages_always_fault(ram: GuestMemory, cr0: int) -> None:
    chain = build(ram, PagingMode.LEVEL4)
    chain.set("PML4E", chain.get("PML4E") & ~RW)
    result = chain.walk(USER_WRITE, cr0=cr0)
    assert result.fault is Fault.WRITE_PROTECT and result.culprit.level == "PML4E"
    assert result.error_code == PF_P | PF_WR | PF_US
    assert chain.walk(USER_READ, cr0=cr0).ok


# --- user/supervisor ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "level"), [(PagingMode.BIT32, "PDE"), (PagingMode.BIT32, "PTE"),
                                             (PagingMode.PAE, "PTE"), (PagingMode.LEVEL4, "PDPTE")])
def test_user_access_to_a_supervisor_page(ram: GuestMemory, mode: PagingMode, level: str) -> None:
    chain = build(ram, mode)
    chain.set(level, chain.get(level) & ~US)
    result = chain.walk(USER_READ)
    assert result.fault is Fault.USER_SUPERVISOR and result.culprit.level == level
    assert result.error_code == PF_P | PF_US
    supervisor = chain.walk(WRITE, cr0=PG | CR0_WP)
    assert supervisor.ok and not supervisor.rights.user


def test_pae_pdptes_carry_no_access_rights(ram: GuestMemory) -> None:
    chain = build(ram, PagingMode.PAE)
    assert chain.get("PDPTE") & (RW | US) == 0  # P only, as the PDPTE format demands
    assert chain.walk(USER_WRITE, cr0=PG | CR0_WP).ok


def test_smep_refuses_supervisor_fetches_from_user_pages(ram: GuestMemory) -> None:
    chain = build(ram, PagingMode.BIT32)
    assert chain.walk(EXECUTE).ok
    result = chain.walk(EXECUTE, cr4=CR4_SMEP)
    assert result.fault is Fault.SMEP and result.error_code == PF_P | PF_ID
    assert chain.walk(READ, cr4=CR4_SMEP).ok and chain.walk(USER_EXECUTE, cr4=CR4_SMEP).ok
    chain.set("PTE", chain.get("PTE") & ~US)  # a supervisor page: SMEP has nothing to say
    assert chain.walk(EXECUTE, cr4=CR4_SMEP).ok


def test_smap_refuses_supervisor_data_accesses_to_user_pages_unless_ac(ram: GuestMemory) -> None:
    chain = build(ram, PagingMode.LEVEL4)
    for access in (READ, WRITE):
        result = chain.walk(access, cr4=CR4_SMAP)
        assert result.fault is Fault.SMAP and result.error_code == PF_P | (PF_WR if access.write else 0)
        assert chain.walk(Access(access.op, ac=True), cr4=CR4_SMAP).ok
    assert chain.walk(EXECUTE, cr4=CR4_SMAP).ok and chain.walk(USER_READ, cr4=CR4_SMAP).ok


# --- no-execute -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "level"), [(PagingMode.PAE, "PDE"), (PagingMode.PAE, "PTE"),
                                             (PagingMode.LEVEL4, "PML4E"), (PagingMode.LEVEL4, "PTE")])
def test_no_execute_with_nxe(ram: GuestMemory, mode: PagingMode, level: str) -> None:
    chain = build(ram, mode)
    chain.set(level, chain.get(level) | XD)
    result = chain.walk(EXECUTE, efer=EFER_NXE)
    assert result.fault is Fault.NO_EXECUTE and result.culprit.level == level
    assert result.error_code == PF_P | PF_ID
    assert chain.walk(USER_EXECUTE, efer=EFER_NXE).error_code == PF_P | PF_US | PF_ID
    data = chain.walk(WRITE, efer=EFER_NXE)
    assert data.ok and not data.rights.executable


def test_xd_without_nxe_is_a_reserved_bit(ram: GuestMemory) -> None:
    chain = build(ram, PagingMode.PAE)
    chain.set("PTE", chain.get("PTE") | XD)
    result = chain.walk(EXECUTE)
    assert result.fault is Fault.RESERVED_BIT and result.reserved == XD
    assert result.error_code == PF_P | PF_RSVD  # no I/D: NXE is off and SMEP too
    assert chain.walk(READ).error_code == PF_P | PF_RSVD


def test_32bit_paging_has_no_execute_disable(ram: GuestMemory) -> None:
    chain = build(ram, PagingMode.BIT32)
    assert chain.walk(EXECUTE, efer=EFER_NXE).ok  # NXE does nothing without PAE-format entries


# --- reserved bits --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "level", "bits", "kw"), [
    (PagingMode.PAE, "PDE", 1 << 52, {}),  # PAE: bits 62:M reserved
    (PagingMode.PAE, "PTE", 1 << 62, {}),
    (PagingMode.PAE, "PTE", 1 << 40, {"maxphyaddr": 40}),
    (PagingMode.LEVEL4, "PML4E", PS, {}),  # PML4Es never map pages
    (PagingMode.LEVEL5, "PML5E", PS, {}),
    (PagingMode.LEVEL4, "PTE", 1 << 51, {"maxphyaddr": 48}),
    (PagingMode.LEVEL4, "PDPTE", 1 << 46, {"maxphyaddr": 46}),
])
def test_reserved_bits_fault_with_rsvd(ram: GuestMemory, mode: PagingMode, level: str, bits: int,
                                       kw: dict[str, int]) -> None:
    chain = build(ram, mode)
    chain.set(level, chain.get(level) | bits)
    result = chain.walk(USER_WRITE, **kw)
    assert result.fault is Fault.RESERVED_BIT and result.culprit.level == level
    assert result.reserved == bits and result.vector == 14
    assert result.error_code == PF_P | PF_WR | PF_US | PF_RSVD
    assert f"reserved bits {bits:#x} set" in result.describe()


def test_4level_ignores_bits_62_52(ram: GuestMemory) -> None:
    chain = build(ram, PagingMode.LEVEL4)
    chain.set("PTE", chain.get("PTE") | (0x7FF << 52))
    assert chain.walk().phys == 0x5234


def test_a_pae_pdpte_with_reserved_bits_is_a_gp_at_cr3_load(ram: GuestMemory) -> None:
    chain = build(ram, PagingMode.PAE)
    chain.set("PDPTE", chain.get("PDPTE") | RW)  # bits 2:1 are reserved in a PAE PDPTE
    result = chain.walk()
    assert result.fault is Fault.RESERVED_BIT and result.reserved == RW
    assert (result.vector, result.error_code) == (13, None)
    assert result.describe().endswith("#GP(0) at the MOV to CR3 that loaded this PDPTE (PAE checks PDPTEs "
                                      "then), not #PF")


@pytest.mark.parametrize(("maxphyaddr", "reserved"), [(52, 1 << 21), (40, 1 << 21), (36, 0x1F << 17),
                                                      (32, 0x1FF << 13)])
def test_32bit_4m_pde_reserved_bits_depend_on_maxphyaddr(ram: GuestMemory, maxphyaddr: int, reserved: int) -> None:
    ram.write_u32(0x10000, 0x00C00000 | (0x1FF << 13) | PS | ALL)  # every bit of 21:13 set
    result = translate(ram.read, PG, 0x10000, CR4_PSE, 0, 0x1234, READ, maxphyaddr=maxphyaddr)
    assert result.fault is Fault.RESERVED_BIT and result.reserved == reserved
    assert result.error_code == PF_P | PF_RSVD


def test_32bit_pde_ps_is_ignored_without_cr4_pse(ram: GuestMemory) -> None:
    # SDM §4.3 / table 4-5: with CR4.PSE=0 bit 7 of a PDE is ignored and the PDE references a
    # page table, so PS=1 is neither a 4 MiB page nor a reserved-bit fault.
    chain = build(ram, PagingMode.BIT32)
    chain.set("PDE", chain.get("PDE") | PS | (1 << 21))  # bit 21 would be reserved in a 4 MiB PDE
    ram.write_u32(0x211004, 0x6000 | ALL)  # the table the PDE names if bit 21 is an address bit
    plain = chain.walk()
    assert plain.ok and [e.level for e in plain.entries] == ["PDE", "PTE"] and plain.phys == 0x6234
    assert chain.walk(cr4=CR4_PSE).fault is Fault.RESERVED_BIT


# --- large pages ----------------------------------------------------------------------------------------


def test_32bit_4m_page_with_pse(ram: GuestMemory) -> None:
    ram.write_u32(0x10000 + 0x200 * 4, 0x00C00000 | (1 << 12) | PS | P | RW)  # bit 12 is PAT, not address
    result = translate(ram.read, PG, 0x10000, CR4_PSE, 0, 0x80123456, WRITE)
    assert (result.phys, result.page_size) == (0x00D23456, 4 << 20)
    assert [e.level for e in result.entries] == ["PDE"] and result.rights == Rights(True, False, True)


def test_32bit_4m_page_above_4g_with_pse36(ram: GuestMemory) -> None:
    ram.write_u32(0x10000, 0x00400000 | (0xAB << 13) | PS | P)
    result = translate(ram.read, PG, 0x10000, CR4_PSE, 0, 0x3FFFFF, READ, maxphyaddr=40)
    assert result.phys == 0xAB_007F_FFFF


def test_pae_2m_page_regardless_of_cr4_pse(ram: GuestMemory) -> None:
    chain = build(ram, PagingMode.PAE)
    chain.set("PDE", 0x600000 | (1 << 12) | PS | ALL)
    result = chain.walk(USER_WRITE)
    assert (result.phys, result.page_size) == (0x601234, 2 << 20)
    assert [e.level for e in result.entries] == ["PDPTE", "PDE"]


def test_pae_2m_page_reserved_bits_20_13(ram: GuestMemory) -> None:
    chain = build(ram, PagingMode.PAE)
    chain.set("PDE", 0x600000 | (1 << 13) | PS | ALL)
    assert chain.walk().reserved == 1 << 13


@pytest.mark.parametrize(("level", "frame", "size", "reserved_bit"), [
    ("PDE", 0x3_FFE0_0000, 2 << 20, 1 << 20),
    ("PDPTE", 0x7_C000_0000, 1 << 30, 1 << 29),
])
def test_4level_large_pages(ram: GuestMemory, level: str, frame: int, size: int, reserved_bit: int) -> None:
    chain = build(ram, PagingMode.LEVEL4)
    chain.set(level, frame | (1 << 12) | PS | ALL)
    result = chain.walk()
    assert (result.phys, result.page_size) == (frame | (chain.vaddr & (size - 1)), size)
    assert result.entries[-1].level == level
    chain.set(level, frame | reserved_bit | PS | ALL)
    assert chain.walk().reserved == reserved_bit


# --- addresses the walk cannot start from, or tables it cannot read ------------------------------------


@pytest.mark.parametrize(("mode", "vaddr", "canonical"), [
    (PagingMode.LEVEL4, 0x0000_8000_0000_0000, False),
    (PagingMode.LEVEL4, 0xFFFF_7FFF_FFFF_FFFF, False),
    (PagingMode.LEVEL4, 0xFFFF_8000_0000_0000, True),
    (PagingMode.LEVEL4, 0x0000_7FFF_FFFF_FFFF, True),
    (PagingMode.LEVEL5, 0x0000_8000_0000_0000, True),
    (PagingMode.LEVEL5, 0x0100_0000_0000_0000, False),
])
def test_non_canonical_addresses_are_a_gp(ram: GuestMemory, mode: PagingMode, vaddr: int, canonical: bool) -> None:
    chain = build(ram, mode)
    result = translate(ram.read, PG, chain.cr3, chain.cr4, chain.efer, vaddr)
    if canonical:
        assert result.fault is Fault.NOT_PRESENT and result.entries
    else:
        assert result.fault is Fault.NON_CANONICAL and result.entries == ()
        assert (result.vector, result.error_code) == (13, None)
        assert "is not canonical" in result.describe() and "#GP(0)" in result.describe()


def test_a_table_outside_ram(ram: GuestMemory) -> None:
    chain = build(ram, PagingMode.BIT32)
    chain.set("PDE", 0x4000_0000 | ALL)
    result = chain.walk()
    assert result.fault is Fault.OUTSIDE_RAM and result.culprit.level == "PTE"
    assert result.culprit.addr == 0x4000_0004 and (result.vector, result.error_code) == (None, None)
    assert "the PTE at 0x40000004 is outside guest RAM" in result.describe()


@pytest.mark.parametrize(("cr0", "cr4", "efer", "vaddr"), [
    (CR0_PE, 0, 0, 1 << 32), (PG, 0, 0, 1 << 32), (PG, CR4_PAE, 0, 1 << 32),
    (PG, CR4_PAE, EFER_LMA, 1 << 64), (PG, 0, 0, -1),
])
def test_addresses_wider_than_the_mode_are_a_caller_error(ram: GuestMemory, cr0: int, cr4: int, efer: int,
                                                          vaddr: int) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        translate(ram.read, cr0, 0x10000, cr4, efer, vaddr)


def test_cr3_low_bits_are_not_part_of_the_table_address(ram: GuestMemory) -> None:
    chain = build(ram, PagingMode.LEVEL4)
    result = translate(ram.read, PG, chain.cr3 | 0x18, chain.cr4, chain.efer, chain.vaddr)  # PWT|PCD
    assert result.phys == 0x5234


# --- small pieces ---------------------------------------------------------------------------------------


def test_error_code_words() -> None:
    assert describe_error_code(0) == "page not present, read, supervisor mode"
    assert describe_error_code(PF_P | PF_WR | PF_US | PF_RSVD | PF_ID) == (
        "protection violation, write, user mode, reserved bit, instruction fetch")


def test_access_from_cpl() -> None:
    assert Access.at_cpl(Op.WRITE, 3) == USER_WRITE
    assert Access.at_cpl(Op.EXECUTE, 0) == EXECUTE and not Access.at_cpl(Op.READ, 1).user
    assert str(USER_EXECUTE) == "user instruction fetch"


# --- reading at linear addresses -------------------------------------------------------------------------


def test_read_linear_without_paging_stops_where_ram_ends(ram: GuestMemory) -> None:
    top = 4 << 20
    ram.write(top - 3, b"abc")
    assert read_linear(ram.read, CR0_PE, 0, 0, 0, top - 3, 15) == b"abc"
    assert read_linear(ram.read, CR0_PE, 0, 0, 0, top + 0x10, 4) == b""
    assert read_linear(ram.read, CR0_PE, 0, 0, 0, 1 << 32, 4) == b""  # past 32-bit linear addresses


@pytest.mark.parametrize("mode", MODES)
def test_read_linear_follows_the_walk_and_stops_at_the_unmapped_next_page(ram: GuestMemory, mode: PagingMode) -> None:
    chain = build(ram, mode)
    page_end = chain.vaddr | 0xFFF
    ram.write(0x5FFE, b"xy")  # the last two bytes of the mapped page; the next linear page has no PTE
    read = read_linear(ram.read, PG, chain.cr3, chain.cr4, chain.efer, page_end - 1, 8)
    assert read == b"xy"
    ram.write(0x5234, b"code")
    assert read_linear(ram.read, PG, chain.cr3, chain.cr4, chain.efer, chain.vaddr, 4) == b"code"


def test_read_linear_checks_the_access(ram: GuestMemory) -> None:
    chain = build(ram, PagingMode.LEVEL4)
    chain.set("PTE", chain.get("PTE") & ~US)
    ram.write(0x5234, b"kern")
    assert read_linear(ram.read, PG, chain.cr3, chain.cr4, chain.efer, chain.vaddr, 4, READ) == b"kern"
    assert read_linear(ram.read, PG, chain.cr3, chain.cr4, chain.efer, chain.vaddr, 4, USER_READ) == b""
