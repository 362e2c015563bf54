"""Bad command lines and bad files: one clear line, status 2, nothing started.

Every case checks the whole contract of DESIGN.md for usage and input
errors: exit status 2, stderr is exactly one line `minikvm: error: …` that
names the problem, stdout is empty (no guest ran), and no traceback anywhere.
"""

from __future__ import annotations

import grp
import io
import os
import re
import resource
import stat
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .support import (
    PAGING_HELLO,
    PAGING_HELLO_OUTPUT,
    bundled_image,
    command,
    describe,
    expected_output,
    run,
    stop_lines,
)

pytestmark = pytest.mark.timeout(60)

KVM_DEVICE = "/dev/kvm"  # the path minikvm opens (minikvm/kvm/system.py)
MIB = 1 << 20
PM_MEMORY = 4 * MIB  # ABI.md: protected and long-mode guests get 4 MiB
PM_LOAD = 0x1000  # ABI.md: and are loaded at 0x1000


def assert_usage_error(proc: subprocess.CompletedProcess[bytes], patterns: list[str]) -> str:
    """The error contract; `patterns` (regular expressions, any case) must all be in the line."""
    text = describe(proc)
    assert b"Traceback" not in proc.stdout + proc.stderr, text
    assert proc.returncode == 2, text
    assert proc.stdout == b"", text
    err = proc.stderr.decode(errors="replace")
    assert err.endswith("\n") and err.count("\n") == 1, f"stderr is not exactly one line\n{text}"
    line = err.rstrip("\n")
    assert line.startswith("minikvm: error: "), text
    for pattern in patterns:
        assert re.search(pattern, line, re.IGNORECASE), f"{pattern!r} is not in the error line\n{text}"
    return line


@dataclass(frozen=True)
class Bad:
    """A bad invocation. In `args`, {tmp} is the test's directory; `names` are regular
    expressions the error line must match ({tmp} there is the escaped directory)."""

    program: str
    args: tuple[str, ...]
    names: tuple[str, ...]
    needs_kvm: bool = False  # the problem is found after /dev/kvm is opened


def long_mode_image_size() -> int:
    """An image that fits in the default 4 MiB below the top page, where long mode's page tables are."""
    return PM_MEMORY - PM_LOAD - 0x1000


CASES = {
    # files
    "missing-file": Bad("minikvm", ("run", "{tmp}/missing.bin"),
                        (r"{tmp}/missing\.bin", r"no such file|not found|does not exist|missing")),
    "kvm-vmm-missing-file": Bad("kvm-vmm", ("{tmp}/missing.bin",),
                                (r"{tmp}/missing\.bin", r"no such file|not found|does not exist|missing")),
    "directory": Bad("minikvm", ("run", "{tmp}/adir"), (r"{tmp}/adir", r"directory")),
    "missing-file-with-a-newline-in-its-name": Bad("minikvm", ("run", "{tmp}/miss\ning.bin"),
                                                   (r"{tmp}/miss\\ning\.bin", r"no such file")),
    "empty-file": Bad("minikvm", ("run", "{tmp}/empty.bin"), (r"{tmp}/empty\.bin", r"empty")),
    "bad-file-among-good-guests": Bad("minikvm", ("run", "hello", "counter", "{tmp}/missing.bin"),
                                      (r"{tmp}/missing\.bin",)),
    "real-mode-image-larger-than-memory": Bad(
        "minikvm", ("run", "--memory", "1M", "{tmp}/big.bin"),
        (r"{tmp}/big\.bin", r"does not fit|too (big|large)"), needs_kvm=True),
    "long-mode-image-over-page-tables": Bad(
        "minikvm", ("run", "--mode", "long", "{tmp}/long.bin"),
        (r"{tmp}/long\.bin", r"page tables"), needs_kvm=True),
    "kvm-vmm-long-mode-image-over-page-tables": Bad(
        "kvm-vmm", ("--long-mode", "{tmp}/long.bin"),
        (r"{tmp}/long\.bin", r"page tables"), needs_kvm=True),
    "load-address-beyond-memory": Bad(
        "minikvm", ("run", "--memory", "1M", "--load", "0xfffff", "{tmp}/two.bin"),
        (r"{tmp}/two\.bin", r"does not fit|too (big|large)|beyond|outside"), needs_kvm=True),
    "real-mode-entry-beyond-1mib": Bad(
        "minikvm", ("run", "--memory", "2M", "--entry", "0x100000", "{tmp}/two.bin"),
        (r"entry", r"0x100000"), needs_kvm=True),
    "protected-mode-load-over-gdt": Bad(
        "minikvm", ("run", "--mode", "protected", "--load", "0", "{tmp}/two.bin"),
        (r"GDT|IDT", r"overlap"), needs_kvm=True),
    # options
    "unknown-option": Bad("minikvm", ("run", "--bogus", "hello"), (r"--bogus",)),
    "kvm-vmm-unknown-option": Bad("kvm-vmm", ("--bogus", "hello"), (r"--bogus",)),
    "memory-4X": Bad("minikvm", ("run", "--memory", "4X", "hello"), (r"--memory", r"\b4X\b")),
    "memory-negative": Bad("minikvm", ("run", "--memory", "-1", "hello"), (r"--memory", r"-1\b")),
    "memory-zero": Bad("minikvm", ("run", "--memory", "0", "hello"),
                       (r"--memory", r"64 ?K|at least|too small|\b0\b")),
    "memory-below-minimum": Bad("minikvm", ("run", "--memory", "32K", "hello"), (r"--memory", r"64 ?K")),
    "memory-above-maximum": Bad("minikvm", ("run", "--memory", "65G", "hello"), (r"--memory", r"64 ?G")),
    "memory-1T": Bad("minikvm", ("run", "--memory", "1T", "hello"), (r"--memory", r"\b1T\b", r"64 ?G")),
    "load-zz": Bad("minikvm", ("run", "--load", "zz", "hello"), (r"--load", r"\bzz\b")),
    "kvm-vmm-entry-zz": Bad("kvm-vmm", ("--entry", "zz", "hello"), (r"--entry", r"\bzz\b")),
    "timeout-zero": Bad("minikvm", ("run", "--timeout", "0", "hello"), (r"--timeout", r"positive|greater than")),
    "timeout-negative": Bad("minikvm", ("run", "--timeout", "-1", "hello"),
                            (r"--timeout", r"positive|greater than")),
    "timeout-abc": Bad("minikvm", ("run", "--timeout", "abc", "hello"), (r"--timeout", r"\babc\b")),
    "input-grace-zero": Bad("minikvm", ("run", "--input-grace", "0", "hello"),
                            (r"--input-grace", r"positive|greater than")),
    "accel-unknown": Bad("minikvm", ("run", "--accel", "qemu", "hello"), (r"--accel", r"\bqemu\b")),
    "log-dir-is-a-file": Bad("minikvm", ("run", "--log-dir", "{tmp}/afile", "hello"),
                             (r"--log-dir", r"{tmp}/afile", r"not a directory")),
    "log-dir-below-a-file": Bad("minikvm", ("run", "--log-dir", "{tmp}/afile/logs", "hello"),
                                (r"--log-dir", r"{tmp}/afile/logs", r"not a directory")),
    # guests and modes
    "unknown-guest-suggests-close-name": Bad("minikvm", ("run", "helo"), (r"\bhelo\b", r"\bhello\b")),
    "unknown-guest-points-to-list": Bad("minikvm", ("run", "zzyzx"), (r"\bzzyzx\b", r"minikvm guests")),
    "mode-mismatches-bundled-guest": Bad("minikvm", ("run", "--mode", "long", "hello"),
                                         (r"\bhello\b", r"\breal\b", r"\blong\b")),
    "protected-mode-for-long-mode-guest": Bad("minikvm", ("run", "--mode", "protected", "hello_64"),
                                              (r"\bhello_64\b", r"\blong\b", r"\bprotected\b")),
    "kvm-vmm-long-mode-for-real-mode-guest": Bad("kvm-vmm", ("--long-mode", "hello"),
                                                 (r"\bhello\b", r"\breal\b", r"\blong\b")),
    "mode-unknown": Bad("minikvm", ("run", "--mode", "unreal", "{tmp}/two.bin"), (r"--mode", r"\bunreal\b")),
    "kvm-vmm-paging-and-long-mode": Bad("kvm-vmm", ("--paging", "--long-mode", "{tmp}/two.bin"),
                                        (r"--paging", r"--long-mode")),
    "kvm-vmm-no-guest": Bad("kvm-vmm", (), (r"\bguest", r"required|missing|no guest")),
}

# More bad files, values and combinations (tests/robustness adds these; the files are made in bad_files).
CASES.update({
    # files
    "unreadable-file": Bad("minikvm", ("run", "/proc/self/mem"), (r"/proc/self/mem", r"cannot read|input/output")),
    "truncated-elf": Bad("minikvm", ("run", "{tmp}/truncated.elf"), (r"{tmp}/truncated\.elf", r"truncated|file")),
    "elf-for-another-machine": Bad("minikvm", ("run", "{tmp}/arm.elf"),
                                   (r"{tmp}/arm\.elf", r"not for x86|EM_386|machine|ARM")),
    "elf-without-multiboot-header": Bad("minikvm", ("run", "{tmp}/plain.elf"), (r"{tmp}/plain\.elf", r"multiboot")),
    "multiboot-bad-checksum": Bad("minikvm", ("run", "{tmp}/badsum.bin"), (r"{tmp}/badsum\.bin", r"checksum")),
    "multiboot-unknown-required-flag": Bad("minikvm", ("run", "{tmp}/flag5.bin"),
                                           (r"{tmp}/flag5\.bin", r"feature bit|flags")),
    "multiboot-kernel-beyond-memory": Bad("minikvm", ("run", "--memory", "1M", "{tmp}/mb.elf"),
                                          (r"{tmp}/mb\.elf", r"outside|does not fit|memory"), needs_kvm=True),
    "multiboot-command-line-too-long": Bad("minikvm", ("run", "--append", "x" * 5000, "{tmp}/mb.elf"),
                                           (r"command line",), needs_kvm=True),
    "protected-image-larger-than-memory": Bad("minikvm", ("run", "--mode", "protected", "--memory", "64K",
                                                          "{tmp}/big.bin"),
                                              (r"{tmp}/big\.bin", r"does not fit|too (big|large)"), needs_kvm=True),
    "paging-memory-below-the-page-tables": Bad("minikvm", ("run", "--mode", "paging", "--memory", "64K",
                                                           "{tmp}/two.bin"), (r"page tables",)),
    "paging-4m-pages-without-pse": Bad("minikvm", ("run", "--mode", "paging", "--pages", "4m", "--cr4", "0",
                                                   "{tmp}/two.bin"), (r"PSE",)),
    "paging-cr0-without-paging": Bad("minikvm", ("run", "--mode", "paging", "--cr0", "0x11", "{tmp}/two.bin"),
                                     (r"CR0", r"paging|PG")),
    "protected-entry-outside-ram": Bad("minikvm", ("run", "--mode", "protected", "--entry", "0x10000000",
                                                   "{tmp}/two.bin"), (r"entry", r"0x10000000"), needs_kvm=True),
    "real-entry-outside-ram": Bad("minikvm", ("run", "--memory", "64K", "--entry", "0x20000", "{tmp}/two.bin"),
                                  (r"entry", r"0x20000"), needs_kvm=True),
    "symbols-missing": Bad("minikvm", ("run", "--symbols", "{tmp}/missing.elf", "hctest"),
                           (r"{tmp}/missing\.elf", r"no such file|cannot read|missing")),
    "symbols-not-an-elf": Bad("minikvm", ("run", "--symbols", "{tmp}/two.bin", "hctest"),
                              (r"{tmp}/two\.bin", r"ELF|symbols")),
    # values
    "memory-0x": Bad("minikvm", ("run", "--memory", "0x", "hello"), (r"--memory", r"'0x'")),
    "memory-fraction": Bad("minikvm", ("run", "--memory", "1.5M", "hello"), (r"--memory", r"1\.5M")),
    "memory-empty": Bad("minikvm", ("run", "--memory", "", "hello"), (r"--memory",)),
    "memory-enormous": Bad("minikvm", ("run", "--memory", "99999999999999999999999G", "hello"),
                           (r"--memory", r"64 ?G")),
    "load-negative": Bad("minikvm", ("run", "--load", "-0x10", "hello"), (r"--load",)),
    "load-beyond-64-bits": Bad("minikvm", ("run", "--load", "0x10000000000000000", "hello"),
                               (r"--load", r"range|0x10000000000000000")),
    "cr0-zz": Bad("minikvm", ("run", "--cr0", "zz", "hello"), (r"--cr0", r"\bzz\b")),
    # Paging on with no page tables: Unicorn's segment load would have died of SIGSEGV.
    "cr4-reserved-bit-on-kvm": Bad("minikvm", ("run", "--accel", "kvm", "--mode", "long", "--cr4", "0x8620",
                                               "{tmp}/two.bin"), (r"KVM refused", r"CR4=0x8620"), needs_kvm=True),
    "cr4-la57-on-the-software-cpu": Bad("minikvm", ("run", "--accel", "emu", "--mode", "long", "--cr4", "0x1000",
                                                    "{tmp}/two.bin"), (r"software CPU refused", r"CR4=0x1000")),
    "protected-mode-entry-beyond-4-gib": Bad("minikvm", ("run", "--accel", "emu", "--mode", "protected", "--memory",
                                                         "8G", "--entry", "0x100001000", "{tmp}/two.bin"),
                                             (r"entry 0x100001000", r"beyond 4 GiB")),
    "protected-mode-load-beyond-4-gib": Bad("minikvm", ("run", "--accel", "emu", "--mode", "protected", "--memory",
                                                        "8G", "--load", "0x100001000", "{tmp}/two.bin"),
                                            (r"load address 0x100001000", r"4 GiB")),
    "cr0-paging-without-page-tables": Bad("minikvm", ("run", "--accel", "emu", "--mode", "protected", "--cr0",
                                                      "0x80000011", "{tmp}/two.bin"),
                                          (r"\bCS\b", r"not mapped by the page tables")),
    "timeout-nan": Bad("minikvm", ("run", "--timeout", "nan", "hello"), (r"--timeout", r"\bnan\b")),
    "timeout-infinite": Bad("minikvm", ("run", "--timeout", "inf", "hello"), (r"--timeout", r"\binf\b")),
    "timeout-overflow": Bad("minikvm", ("run", "--timeout", "1e999", "hello"), (r"--timeout", r"1e999")),
    "input-grace-abc": Bad("minikvm", ("run", "--input-grace", "abc", "hello"), (r"--input-grace", r"\babc\b")),
    "pages-8k": Bad("minikvm", ("run", "--pages", "8k", "hello"), (r"--pages", r"\b8k\b")),
    "vga-maybe": Bad("minikvm", ("run", "--vga", "maybe", "hello"), (r"--vga", r"\bmaybe\b")),
    "gdb-negative-port": Bad("minikvm", ("run", "--gdb", "localhost:-1", "hello"), (r"--gdb", r"localhost:-1")),
    "gdb-port-out-of-range": Bad("minikvm", ("run", "--gdb", "65536", "hello"), (r"--gdb", r"65536")),
    "gdb-not-an-address": Bad("minikvm", ("run", "--gdb", "127.0.0.1:port", "hello"), (r"--gdb", r"port")),
    "log-dir-where-nothing-can-be-made": Bad("minikvm", ("run", "--log-dir", "/proc/minikvm-logs", "hello"),
                                             (r"--log-dir", r"/proc/minikvm-logs")),
    # output files: checked before anything runs
    "trace-file-is-the-guest": Bad("minikvm", ("run", "--trace-file", "{tmp}/two.bin", "{tmp}/two.bin"),
                                   (r"{tmp}/two\.bin", r"destroy")),
    "screenshot-is-the-guest": Bad("minikvm", ("run", "--screenshot", "{tmp}/two.bin", "{tmp}/two.bin"),
                                   (r"--screenshot", r"destroy")),
    "screenshot-in-a-missing-directory": Bad("minikvm", ("run", "--screenshot", "{tmp}/missing/x.png", "hello"),
                                             (r"--screenshot", r"no directory {tmp}/missing")),
    "screenshot-is-a-directory": Bad("minikvm", ("run", "--screenshot", "{tmp}/adir", "hello"),
                                     (r"--screenshot", r"is a directory")),
    "log-file-cannot-be-created": Bad("minikvm", ("run", "--log-dir", "{tmp}/logs", "hello"),
                                      (r"{tmp}/logs/hello\.log", r"is a directory"), needs_kvm=True),
    "unknown-command": Bad("minikvm", ("frobnicate",), (r"frobnicate",)),
    # conflicting options
    "append-without-a-multiboot-kernel": Bad("minikvm", ("run", "--append", "quiet", "hello"),
                                             (r"--append", r"none of the guests is one")),
    "pages-outside-the-paging-layout": Bad("minikvm", ("run", "--pages", "4m", "hello"),
                                           (r"--pages", r"--mode paging")),
    "load-for-a-multiboot-kernel": Bad("minikvm", ("run", "--load", "0x200000", "--cr4", "0", "{tmp}/mb.elf"),
                                       (r"--load, --cr4", r"Multiboot kernel")),
    "quiet-and-verbose": Bad("minikvm", ("run", "--quiet", "--verbose", "hello"), (r"--quiet", r"--verbose")),
})


@pytest.fixture
def bad_files(tmp_path: Path) -> Path:
    (tmp_path / "empty.bin").write_bytes(b"")
    (tmp_path / "big.bin").write_bytes(bytes(2 * MIB))  # 2 MiB: more than --memory 1M
    (tmp_path / "long.bin").write_bytes(bytes(long_mode_image_size()))
    (tmp_path / "two.bin").write_bytes(b"\xf4\xf4")  # hlt; hlt
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("not a directory\n")
    (tmp_path / "logs" / "hello.log").mkdir(parents=True)  # where --log-dir logs would write hello's log
    write_bad_kernels(tmp_path)
    return tmp_path


MB_MAGIC = 0x1BADB002


def write_bad_kernels(directory: Path) -> None:
    """Broken ELF and Multiboot files, made from the bundled Multiboot kernels (guests/build)."""
    elf = bundled_image("mb_hello", ".elf").read_bytes()
    kludge = bundled_image("mb_kludge").read_bytes()
    (directory / "mb.elf").write_bytes(elf)  # linked at 1 MiB
    header = elf.find(MB_MAGIC.to_bytes(4, "little"))
    assert header >= 0, "mb_hello.elf has no Multiboot header"
    (directory / "truncated.elf").write_bytes(elf[:header + 48])  # the header, then the segments cut off
    arm = bytearray(elf)
    arm[18:20] = (40).to_bytes(2, "little")  # e_machine = EM_ARM
    (directory / "arm.elf").write_bytes(bytes(arm))
    (directory / "plain.elf").write_bytes(bundled_image("hello_64", ".elf").read_bytes())
    at = kludge.find(MB_MAGIC.to_bytes(4, "little"))
    assert at >= 0, "mb_kludge.bin has no Multiboot header"
    badsum = bytearray(kludge)
    badsum[at + 8] ^= 0xFF  # the checksum
    (directory / "badsum.bin").write_bytes(bytes(badsum))
    flags = int.from_bytes(kludge[at + 4:at + 8], "little") | (1 << 5)  # a requirement nobody defines
    flag5 = bytearray(kludge)
    flag5[at + 4:at + 12] = flags.to_bytes(4, "little") + (-(MB_MAGIC + flags) & 0xFFFFFFFF).to_bytes(4, "little")
    (directory / "flag5.bin").write_bytes(bytes(flag5))


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input(case: Bad, bad_files: Path, request: pytest.FixtureRequest) -> None:
    if case.needs_kvm:
        request.getfixturevalue("kvm_required")
    args = [arg.replace("{tmp}", str(bad_files)) for arg in case.args]
    patterns = [name.replace("{tmp}", re.escape(str(bad_files))) for name in case.names]
    proc = run(case.program, *args)
    assert_usage_error(proc, patterns)


def mem_available() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    pytest.skip("/proc/meminfo has no MemAvailable")


def test_paging_without_page_tables_on_kvm_is_a_reported_triple_fault(kvm_required: None, tmp_path: Path) -> None:
    """KVM triple-faults; the explainer's replay on the software CPU must fail in words, not in SIGSEGV.
    (Where KVM cannot run protected mode, the case above covers the software CPU alone.)"""
    from minikvm.accel import AcceleratorError, choose
    from minikvm.arch.x86.state import Mode

    try:
        choose("kvm", Mode.PROTECTED)
    except AcceleratorError as err:
        pytest.skip(str(err))
    guest = tmp_path / "two.bin"
    guest.write_bytes(b"\xf4\xf4")
    proc = run("minikvm", "run", "--accel", "kvm", "--mode", "protected", "--cr0", "0x80000011", str(guest))
    assert proc.returncode == 1 and "triple fault" in proc.stderr.decode(), describe(proc)
    assert b"Traceback" not in proc.stderr, describe(proc)


def _with_closed(redirect: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """minikvm started by a shell with one standard fd closed (`<&-`, `>&-`, `2>&-`)."""
    line = " ".join([command("minikvm"), *args, redirect])
    return subprocess.run(["sh", "-c", line], capture_output=redirect != ">&-", timeout=60)


def test_closed_stdin_is_no_input(kvm_required: None) -> None:
    proc = _with_closed("<&-", "run", "hello")
    assert proc.returncode == 0 and proc.stdout == expected_output("hello"), describe(proc)


def test_closed_stdout_is_refused_before_anything_runs() -> None:
    proc = subprocess.run(["sh", "-c", f"{command('minikvm')} run hello 2>&1 >&- | cat"], capture_output=True,
                          timeout=60)
    lines = proc.stdout.decode().splitlines()  # stderr, through the pipe
    assert len(lines) == 1 and lines[0].startswith("minikvm: error: standard output is closed"), describe(proc)
    status = subprocess.run(["sh", "-c", f"{command('minikvm')} guests >&- 2>/dev/null"], timeout=60).returncode
    assert status == 2


def test_closed_stderr_keeps_the_exit_status() -> None:
    proc = _with_closed("2>&-", "run", "--memory", "4X", "hello")
    assert proc.returncode == 2 and proc.stdout == b"", describe(proc)


def test_more_guests_than_free_memory(tmp_path: Path) -> None:
    each = 16 << 30
    count = mem_available() // each + 2  # one more than fits, and one for MemAvailable moving
    image = tmp_path / "hlt.bin"
    image.write_bytes(b"\xf4")
    proc = run("minikvm", "run", "--memory", "16G", *[str(image)] * count)
    assert_usage_error(proc, [rf"\b{count}\b", r"too many|not enough|exceed", r"memory"])


def test_more_guests_than_file_descriptors(tmp_path: Path) -> None:
    """100000 guests on one command line (a short relative path keeps it under ARG_MAX)."""
    count = 100_000
    (tmp_path / "g").write_bytes(b"\xf4")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def few_files() -> None:  # a host where 100000 VMs' file descriptors cannot exist
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    proc = run("minikvm", "run", *["g"] * count, cwd=tmp_path, preexec_fn=few_files)
    assert_usage_error(proc, [rf"\b{count}\b", r"too many|not enough|exceed"])


# --- the accelerator cannot be had -----------------------------------------------


def test_accel_kvm_for_a_mode_this_kvm_cannot_run(kvm_required: None, tiny_guest: Callable[[str, bytes], Path]) -> None:
    """DESIGN.md: `--accel kvm` for a mode the host's KVM cannot run is a clear error before any
    guest code runs, never a mysterious SHUTDOWN. Where KVM can run 32-bit paging, the guest runs."""
    proc = run("kvm-vmm", "--paging", "--accel", "kvm", str(tiny_guest("paging", PAGING_HELLO)))
    if proc.returncode == 2:
        assert_usage_error(proc, [r"paging", r"--accel (emu|auto)"])
    else:
        assert proc.returncode == 0 and proc.stdout == PAGING_HELLO_OUTPUT, describe(proc)
        assert "halted" in stop_lines(proc.stderr)["paging"], describe(proc)


# --- /dev/kvm missing, not KVM, or not accessible (faked in a private mount namespace) ---


def in_namespace(prefix: list[str], setup: str, *argv: str) -> subprocess.CompletedProcess[bytes]:
    """Run `setup`, then argv, as root in a private mount namespace (the host's mounts are untouched)."""
    return subprocess.run([*prefix, f'{setup} && exec "$@"', "e2e", *argv],
                          input=b"", capture_output=True, timeout=60)


NO_DEV = "mount -t tmpfs none /dev"  # an empty /dev: no /dev/kvm


def test_dev_kvm_missing_with_accel_kvm(mount_namespace: list[str]) -> None:
    proc = in_namespace(mount_namespace, NO_DEV, command("minikvm"), "run", "--accel", "kvm", "hello")
    assert_usage_error(proc, [re.escape(KVM_DEVICE), r"does not exist|missing|no such|not found"])


def test_dev_kvm_missing_auto_runs_on_the_software_cpu(mount_namespace: list[str]) -> None:
    """DESIGN.md: auto picks the software CPU where KVM is missing, and says so in one line."""
    proc = in_namespace(mount_namespace, NO_DEV, command("minikvm"), "run", "hello")
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == expected_output("hello"), describe(proc)
    assert "Traceback" not in proc.stderr.decode(), describe(proc)
    notes = [line for line in proc.stderr.decode().splitlines() if "software CPU" in line]
    assert len(notes) == 1 and KVM_DEVICE in notes[0], describe(proc)
    assert "halted" in stop_lines(proc.stderr)["hello"], describe(proc)


def test_bad_image_without_kvm_is_still_one_line(mount_namespace: list[str], bad_files: Path) -> None:
    """Bad input is found before anything else is said: no accelerator note ahead of the error."""
    image = bad_files / "big.bin"
    proc = in_namespace(mount_namespace, NO_DEV, command("minikvm"), "run", "--memory", "1M", str(image))
    assert_usage_error(proc, [re.escape(str(image)), r"does not fit|too (big|large)"])


def test_dev_kvm_is_not_kvm(mount_namespace: list[str]) -> None:
    proc = in_namespace(mount_namespace, f"mount --bind /dev/null {KVM_DEVICE}",
                        command("minikvm"), "run", "--accel", "kvm", "hello")
    assert_usage_error(proc, [re.escape(KVM_DEVICE), r"not (a )?KVM|KVM_GET_API_VERSION"])


UNPRIVILEGED = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.mark.parametrize("mode", [0o600, 0o660], ids=["owner-only", "owner-and-group"])
def test_dev_kvm_not_accessible(mount_namespace: list[str], tmp_path: Path, mode: int) -> None:
    """As an unprivileged user, /dev/kvm (a stand-in owned by root:root) cannot be opened.

    The message must name the device and, if it gives advice, advice that
    works: joining the device's group only helps when the group may read
    and write it.
    """
    probe = subprocess.run([*UNPRIVILEGED, command("minikvm"), "--help"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"minikvm cannot run as uid 65534 here: {probe.stderr.decode().strip()[-200:]}")
    stand_in = tmp_path / "kvm"
    stand_in.write_bytes(b"")
    os.chown(stand_in, 0, 0)
    os.chmod(stand_in, mode)
    proc = in_namespace(mount_namespace, f"mount --bind {stand_in} {KVM_DEVICE}",
                        *UNPRIVILEGED, command("minikvm"), "run", "--accel", "kvm", "hello")
    line = assert_usage_error(proc, [re.escape(KVM_DEVICE), r"not accessible|permission denied"])
    group = grp.getgrgid(0).gr_name
    joins = re.search(r"(add yourself to|join) (the )?group '?([\w-]+)", line)
    if mode & (stat.S_IRGRP | stat.S_IWGRP) == stat.S_IRGRP | stat.S_IWGRP:
        assert joins and joins[3] == group, f"the advice should name group '{group}': {line}"
    else:
        assert not joins, f"joining group '{group}' cannot help with a mode {mode:o} device: {line}"


# --- files that never end, and files that block -----------------------------------------------------


def test_an_endless_device_as_the_guest_is_refused() -> None:
    """`minikvm run /dev/zero`: not a guest image; reading it to the end would take all memory.
    (The address space is limited here so that a minikvm that tries fails fast instead of swapping.)"""
    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, resource.RLIM_INFINITY))

    proc = run("minikvm", "run", "/dev/zero", preexec_fn=limited)
    assert_usage_error(proc, [r"/dev/zero", r"not a (regular )?file|device|too (big|large)|does not fit"])


def test_a_named_pipe_as_the_guest_is_refused(tmp_path: Path) -> None:
    """A FIFO nobody writes to: minikvm must say so, not wait forever in open()."""
    fifo = tmp_path / "guest.fifo"
    os.mkfifo(fifo)
    try:
        proc = run("minikvm", "run", str(fifo), timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"minikvm run {fifo} still waits after 15 s")
    assert_usage_error(proc, [re.escape(str(fifo)), r"not a (regular )?file|pipe|FIFO"])


# --- generated bad values and command lines (hypothesis) -----------------------------------------------

JUNK = st.one_of(
    st.text(alphabet="0123456789abcdefxXkKmMgGtTiIbB.-+_: eE\t", max_size=14),
    st.integers(-(1 << 70), 1 << 70).map(str),
    st.integers(0, 1 << 70).map(hex),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "0x", "-", "--", "1e999", "nan", "-inf", "4X", "0b101", "1_000", "\u0663",
                     "4M4", "0x1p3", "127.0.0.1:", ":", "[::1]:99999", "0o17", "1,5"]),
)


def value_options() -> list[str]:
    """The run options that take a number or an address (from the parser itself: new ones are covered too)."""
    from minikvm.cli import build_minikvm_parser

    parser = build_minikvm_parser()
    run_parser = parser._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    return [action.option_strings[0] for action in run_parser._actions
            if action.option_strings and action.nargs is None and callable(action.type)
            and action.type.__name__.startswith("parse_")]


def assert_contract(proc: subprocess.CompletedProcess[bytes], name: str) -> None:
    """Either a usage error in one line naming the option, or a run that ends with a stop line."""
    text = describe(proc)
    assert b"Traceback" not in proc.stdout + proc.stderr, text
    assert b"internal error" not in proc.stderr, text
    if proc.returncode == 2:
        err = proc.stderr.decode(errors="replace")
        assert err.count("\n") == 1 and err.startswith("minikvm: error: "), text
        assert name in err or "guest.bin" in err, text
    else:
        assert proc.returncode in (0, 1, 124), text
        assert stop_lines(proc.stderr) or "--quiet" in proc.args, text  # --quiet: stderr stays empty


@pytest.fixture(scope="module")
def hlt_guest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hypothesis") / "guest.bin"
    path.write_bytes(b"\xf4")
    return path


@pytest.mark.timeout(240)
@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_bad_values(hlt_guest: Path, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(value_options()), label="option")
    value = data.draw(JUNK, label="value")
    # --timeout first: a value that is accepted (--entry 159, say) may start a guest that never ends.
    argv = ["run", "--accel", "emu", "--timeout", "2", f"{name}={value}" if data.draw(st.booleans()) else name,
            str(hlt_guest)]
    if "=" not in argv[5]:
        argv.insert(6, value)
    proc = run("minikvm", *argv, timeout=30)
    assert_contract(proc, name)


TOKENS = ["--mode", "real", "protected", "paging", "long", "unreal", "--memory", "4M", "64K", "0", "--load",
          "0x1000", "0x7c00", "--entry", "0x80001000", "--cr0", "0x11", "--cr4", "0", "--pages", "4m", "--accel",
          "emu", "qemu", "--interrupts", "--no-interrupts", "--vga", "off", "--quiet", "--stats", "--input-grace",
          "0.1", "--append", "x", "--trace", "3", "-v", "--", "-", "hello", "hctest", "hello_pm", "guest.bin",
          "missing.bin", "--bogus", "=", "--memory=", "--gdb", "0", "1.5", "-1", "0xzz"]


@pytest.mark.timeout(240)
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tokens=st.lists(st.sampled_from(TOKENS), max_size=8))
def test_generated_command_lines(hlt_guest: Path, tokens: list[str]) -> None:
    """Random token soup after `minikvm run --timeout 2`: one line and status 2, or a run that stops."""
    proc = run("minikvm", "run", "--timeout", "2", *tokens, cwd=hlt_guest.parent, timeout=30)
    assert_contract(proc, "")


def test_a_huge_image_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """8 GiB (sparse) that cannot fit in 1 MiB: refused from its size. Read first, it took seconds and
    gigabytes, and in 4 GB of address space ended as 'internal error: MemoryError()'."""
    image = tmp_path / "huge.bin"
    with image.open("wb") as stream:
        stream.truncate(8 << 30)

    def small_address_space() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    proc = run("minikvm", "run", str(image), preexec_fn=small_address_space)
    assert_usage_error(proc, [re.escape(str(image)), r"the image is 8589934592 bytes: it does not fit at load "
                                                     r"address 0x0 below 0x100000 \(1024 KiB of guest RAM\)"])


def test_a_multiboot_kernel_file_may_outweigh_its_ram(kvm_required: None, tmp_path: Path) -> None:
    """Only its segments are loaded: 5 MiB of file (say, debug information) boots in the default 4 MiB."""
    kernel = tmp_path / "padded.elf"
    kernel.write_bytes(bundled_image("mb_hello", ".elf").read_bytes() + bytes(5 * MIB))
    proc = run("minikvm", "run", "--timeout", "20", str(kernel))
    assert proc.returncode == 0 and b"halting." in proc.stdout, describe(proc)


def test_a_multiboot_kernel_gets_the_bytes_of_its_name_and_command_line(kvm_required: None,
                                                                        tmp_path: Path) -> None:
    """A file name and an --append that are not UTF-8 reach the kernel as given (it prints its command line)."""
    kernel = tmp_path / os.fsdecode(b"mb\xff.elf")
    kernel.write_bytes(bundled_image("mb_hello", ".elf").read_bytes())
    proc = run("minikvm", "run", "--timeout", "20", "--append", os.fsdecode(b"a\xffb"), str(kernel))
    assert proc.returncode == 0, describe(proc)
    assert b"cmdline: " + os.fsencode(kernel) + b" a\xffb\n" in proc.stdout, describe(proc)


def with_symtab_as_progbits(elf: bytes) -> bytes:
    """`elf` with its .symtab section's sh_type changed to SHT_PROGBITS (1): a section, but no symbol table."""
    parsed = ELFFile(io.BytesIO(elf))
    index = next(i for i, section in enumerate(parsed.iter_sections()) if section.name == ".symtab")
    broken = bytearray(elf)
    struct.pack_into("<I", broken, parsed["e_shoff"] + index * parsed["e_shentsize"] + 4, 1)
    return bytes(broken)


def test_symbols_from_a_symtab_that_is_not_a_symbol_table_are_refused(tmp_path: Path) -> None:
    symbols = tmp_path / "odd.elf"
    symbols.write_bytes(with_symtab_as_progbits(bundled_image("hctest", ".elf").read_bytes()))
    proc = run("minikvm", "run", "--symbols", str(symbols), "hctest")
    assert_usage_error(proc, [re.escape(str(symbols)), r"\.symtab", r"SHT_PROGBITS", r"not SHT_SYMTAB"])


def test_a_broken_elf_beside_the_guest_only_costs_the_report_its_symbols(kvm_required: None,
                                                                         tmp_path: Path) -> None:
    """NAME.elf beside NAME.bin is read for symbols; when it cannot be, the fault report and --trace go on."""
    guest = tmp_path / "divide.bin"
    guest.write_bytes(bundled_image("broken_divide").read_bytes())
    (tmp_path / "divide.elf").write_bytes(with_symtab_as_progbits(bundled_image("broken_divide", ".elf").read_bytes()))
    proc = run("minikvm", "run", "--mode", "protected", "--trace", "3", str(guest))
    text = proc.stderr.decode()
    assert proc.returncode == 1 and "triple fault: #DE" in text, describe(proc)
    assert "the last 3 instructions executed" in text, describe(proc)
    assert "internal error" not in text and "explainer failed" not in text, describe(proc)
