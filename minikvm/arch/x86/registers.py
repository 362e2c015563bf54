"""Control-register, EFER and RFLAGS bits, with names for dumps."""

from __future__ import annotations

CR0_PE = 1 << 0
CR0_MP = 1 << 1
CR0_EM = 1 << 2
CR0_TS = 1 << 3
CR0_ET = 1 << 4
CR0_NE = 1 << 5
CR0_WP = 1 << 16
CR0_AM = 1 << 18
CR0_NW = 1 << 29
CR0_CD = 1 << 30
CR0_PG = 1 << 31

CR4_VME = 1 << 0
CR4_PVI = 1 << 1
CR4_TSD = 1 << 2
CR4_DE = 1 << 3
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_MCE = 1 << 6
CR4_PGE = 1 << 7
CR4_PCE = 1 << 8
CR4_OSFXSR = 1 << 9
CR4_OSXMMEXCPT = 1 << 10
CR4_UMIP = 1 << 11
CR4_FSGSBASE = 1 << 16
CR4_OSXSAVE = 1 << 18
CR4_SMEP = 1 << 20
CR4_SMAP = 1 << 21

EFER_SCE = 1 << 0
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11

RFLAGS_CF = 1 << 0
RFLAGS_FIXED = 1 << 1  # bit 1 always reads 1
RFLAGS_PF = 1 << 2
RFLAGS_AF = 1 << 4
RFLAGS_ZF = 1 << 6
RFLAGS_SF = 1 << 7
RFLAGS_TF = 1 << 8
RFLAGS_IF = 1 << 9
RFLAGS_DF = 1 << 10
RFLAGS_OF = 1 << 11
RFLAGS_NT = 1 << 14
RFLAGS_RF = 1 << 16
RFLAGS_VM = 1 << 17
RFLAGS_AC = 1 << 18

MSR_SYSENTER_CS = 0x174
MSR_SYSENTER_ESP = 0x175
MSR_SYSENTER_EIP = 0x176
MSR_EFER = 0xC0000080
MSR_STAR = 0xC0000081
MSR_LSTAR = 0xC0000082
MSR_SFMASK = 0xC0000084  # the RFLAGS bits SYSCALL clears
MSR_FS_BASE = 0xC0000100
MSR_GS_BASE = 0xC0000101

CR0_NAMES = {CR0_PE: "PE", CR0_MP: "MP", CR0_EM: "EM", CR0_TS: "TS", CR0_ET: "ET", CR0_NE: "NE",
             CR0_WP: "WP", CR0_AM: "AM", CR0_NW: "NW", CR0_CD: "CD", CR0_PG: "PG"}
CR4_NAMES = {CR4_VME: "VME", CR4_PVI: "PVI", CR4_TSD: "TSD", CR4_DE: "DE", CR4_PSE: "PSE",
             CR4_PAE: "PAE", CR4_MCE: "MCE", CR4_PGE: "PGE", CR4_PCE: "PCE", CR4_OSFXSR: "OSFXSR",
             CR4_OSXMMEXCPT: "OSXMMEXCPT", CR4_UMIP: "UMIP", CR4_FSGSBASE: "FSGSBASE",
             CR4_OSXSAVE: "OSXSAVE", CR4_SMEP: "SMEP", CR4_SMAP: "SMAP"}
EFER_NAMES = {EFER_SCE: "SCE", EFER_LME: "LME", EFER_LMA: "LMA", EFER_NXE: "NXE"}
RFLAGS_NAMES = {RFLAGS_CF: "CF", RFLAGS_PF: "PF", RFLAGS_AF: "AF", RFLAGS_ZF: "ZF", RFLAGS_SF: "SF",
                RFLAGS_TF: "TF", RFLAGS_IF: "IF", RFLAGS_DF: "DF", RFLAGS_OF: "OF", RFLAGS_NT: "NT",
                RFLAGS_RF: "RF", RFLAGS_VM: "VM", RFLAGS_AC: "AC"}


def bit_names(value: int, names: dict[int, str]) -> str:
    """'PE|ET|PG' for the set bits that have names; '-' when none."""
    return "|".join(name for bit, name in names.items() if value & bit) or "-"
