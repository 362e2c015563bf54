"""Issue 3's paging guests (4 KiB, 4 MiB and PAE tables print what they read through two mappings)
and a Multiboot kernel's VGA screen, on every accelerator this host can run them on."""

from __future__ import annotations

from pathlib import Path

import pytest

from minikvm.accel import AcceleratorError, choose, kvm_cannot_run
from minikvm.arch.x86.state import Mode
from minikvm.boot.bundled import guests_dir
from minikvm.devices.input import InputBuffer
from minikvm.machine import GuestSpec, Machine, MachineConfig, run_machines
from minikvm.stop import StopKind

from .harness import ACCELERATORS, assemble, make_accel, run_one

PUTS = """
  # print the NUL-terminated bytes at %esi through PUTCHAR
puts:
    mov $0x500, %dx
1:  movb (%esi), %bl
    test %bl, %bl
    jz 2f
    mov $1, %al
    out %al, %dx
    inc %esi
    jmp 1b
2:  ret
"""

# Written through one virtual address, read back through another that maps the same frame.
ALIAS_GUEST = """
    .code32
    .globl _start
_start:
    mov $0x80090000, %esp
    movl $0x6c696172, WRITE_AT  # "rail" little-endian: r a i l
    movl $0x0a736100, WRITE_AT + 4  # "\\0as\\n" -> bytes 00 61 73 0a; fixed below
    movb $0x20, WRITE_AT + 4  # "rail as\\n"... keep it printable
    mov $READ_AT, %esi
    call puts
    mov $0x500, %dx
    mov $0, %al
    out %al, %dx
""" + PUTS


def alias_guest(tmp_path: Path, write_at: int, read_at: int, load: int) -> bytes:
    source = ALIAS_GUEST.replace("WRITE_AT", f"{write_at:#x}").replace("READ_AT", f"{read_at:#x}")
    return assemble(tmp_path, source, 32, load=load)


EXPECTED_ALIAS = b"rail as\n"


def kvm_refuses(mode: Mode, probe: str) -> bool:
    """On a host whose KVM cannot run `mode`, the KVM case checks that minikvm says so (and the
    software CPU case runs the guest); elsewhere it runs the guest on KVM."""
    reason = kvm_cannot_run(probe)
    if reason is None:
        return False
    with pytest.raises(AcceleratorError) as refusal:
        choose("kvm", mode)
    assert reason in str(refusal.value)
    return True


@pytest.mark.parametrize("accel", ACCELERATORS)
@pytest.mark.parametrize("pages", ["4k", "4m"])
def test_abi_paging_layout_aliases_high_and_low(tmp_path: Path, accel: str, pages: str) -> None:
    if accel == "kvm" and kvm_refuses(Mode.PAGING, "paging-4k" if pages == "4k" else "paging-4m"):
        return
    # ABI.md: physical 0-4 MiB at virtual 0 and at 0x80000000; the kernel runs at 0x80001000.
    image = alias_guest(tmp_path, write_at=0x80300000, read_at=0x00300000, load=0x80001000)
    spec = GuestSpec("alias", "<alias>", image, Mode.PAGING, 4 << 20, pages=pages)
    outcome = run_one(spec, accel=accel)
    assert outcome.output == EXPECTED_ALIAS, outcome.explain()
    assert outcome.result.stop.kind is StopKind.EXIT_HYPERCALL


PAE_SETUP = """
    .code32
    .globl _start
_start:
    mov $0x90000, %esp  # PDPT at 0x100000 (4 entries), PD0 at 0x101000 for 0-1 GiB, PD1 at 0x102000 for 1-2 GiB
    mov $0x100000, %edi
    xor %eax, %eax
    mov $(0x3000 / 4), %ecx
    rep stosl
    movl $0x101001, 0x100000  # PDPTE0 -> PD0, present
    movl $0x102001, 0x100008  # PDPTE1 -> PD1, present
    movl $0x000083, 0x101000  # PD0[0]: 2 MiB page at 0 (identity for the code)
    movl $0x200083, 0x101008  # PD0[1]: 2 MiB page at 2 MiB (identity)
    movl $0x200083, 0x102000  # PD1[0]: virtual 0x40000000 -> physical 2 MiB
    mov %cr4, %eax
    or $0x20, %eax  # CR4.PAE
    mov %eax, %cr4
    mov $0x100000, %eax
    mov %eax, %cr3
    mov %cr0, %eax
    or $0x80000000, %eax  # CR0.PG
    mov %eax, %cr0
    jmp 1f
1:  movl $0x6c696172, 0x40000010  # write through the 0x40000000 alias
    movl $0x0a736120, 0x40000014  # " as\\n"
    movl $0, 0x40000018
    mov $0x200010, %esi  # read through the identity map of the same frame
    call puts
    mov $0x500, %dx
    mov $0, %al
    out %al, %dx
""" + PUTS


@pytest.mark.parametrize("accel", ACCELERATORS)
def test_pae_guest_reads_through_a_second_mapping(tmp_path: Path, accel: str) -> None:
    # The guest turns PAE paging on itself, so minikvm cannot route it by mode; on a host whose
    # KVM cannot run PAE paging (the probe says so) it dies there, and minikvm says it shut down.
    if accel == "kvm" and kvm_cannot_run("pae") is not None:
        outcome = run_one(GuestSpec("pae", "<pae>", assemble(tmp_path, PAE_SETUP, 32, load=0x1000),
                                    Mode.PROTECTED, 4 << 20), accel="kvm")
        assert outcome.result.stop.kind is StopKind.TRIPLE_FAULT and outcome.output == b""
        return
    image = assemble(tmp_path, PAE_SETUP, 32, load=0x1000)
    outcome = run_one(GuestSpec("pae", "<pae>", image, Mode.PROTECTED, 4 << 20), accel=accel)
    assert outcome.output == EXPECTED_ALIAS, outcome.explain()


@pytest.mark.parametrize("accel", ACCELERATORS)
def test_multiboot_kernel_draws_vga_text_and_a_screenshot(tmp_path: Path, accel: str) -> None:
    kernel = guests_dir() / "mb_hello.elf"
    if not kernel.exists():
        pytest.fail("guests/build/mb_hello.elf is not built: run 'make guests'")
    spec = GuestSpec("mb", str(kernel), kernel.read_bytes(), Mode.PROTECTED, 4 << 20, cmdline="lang=en")
    out = bytearray()
    buffer = InputBuffer()
    buffer.close()
    root = make_accel(accel)
    machine = Machine(MachineConfig(spec), root, out.extend, buffer)
    try:
        result = run_machines([machine], timeout=60)[0]
        screen = machine.screen()
    finally:
        machine.close()
        root.close()
    assert result.stop.kind is StopKind.HALT, bytes(out)
    serial = bytes(out).decode().splitlines()
    assert serial[0] == "minikvm multiboot test kernel (ELF)"
    assert f"cmdline: {kernel} lang=en" in serial  # GRUB's convention: the kernel's path first
    assert screen is not None
    text = screen.text()
    assert text[0].strip() == serial[0]  # the same words on the screen as on the serial line
    assert any("lang=en" in line for line in text)
    title = screen.cell(0, 1)
    assert (title.attr >> 4) & 0x7 == 1  # white on blue: the kernel's title bar
    from minikvm.screen import save_png

    png = tmp_path / "screen.png"
    save_png(screen, png)
    from PIL import Image

    with Image.open(png) as image:
        assert image.size == (640, 400)
        pixel = image.convert("RGB").getpixel((4, 2))  # inside the first cell of the blue title bar
        assert pixel[2] > 100 and pixel[0] < 100, pixel
