"""`minikvm run --gdb` driven by the real gdb in batch mode, and by a raw client that misbehaves.

Each session runs on every accelerator this host allows for the guest's mode (minikvm's own
probes decide; the software CPU always can). Expected addresses come from the guests' ELF
files (nm/objdump), never from a run. Everything listens on loopback only.
"""

from __future__ import annotations

import os
import random
import re
import select
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from minikvm.accel import AcceleratorError, choose
from minikvm.arch.x86.state import Mode
from minikvm.debug.trace import kvm_debug_support

from .support import bundled_image, command, describe, expected_output, stop_lines, symbol_address

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("kvm_required")]

ACCELERATORS = ("kvm", "emu")
MODES = {"hello": Mode.REAL, "hello_pm": Mode.PROTECTED, "hello_64": Mode.LONG}


def allowed(accel: str, mode: Mode) -> None:
    """Skip, saying why, where this host's KVM cannot run the mode (the software CPU always can)."""
    if accel == "kvm":
        try:
            choose("kvm", mode)
        except AcceleratorError as err:
            pytest.skip(str(err))


@pytest.fixture(scope="module")
def gdb() -> str:
    path = shutil.which("gdb")
    if path is None:
        if os.environ.get("MINIKVM_REQUIRE_KVM"):  # CI installs gdb: its absence there is a failure
            pytest.fail("gdb is not installed (Debian: apt-get install gdb)")
        pytest.skip("gdb is not installed (Debian: apt-get install gdb)")
    return path


class Minikvm:
    """A `minikvm run --gdb 127.0.0.1:0 …` in the background; the port is read from what it says."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.out, self.err = tmp_path / "stdout", tmp_path / "stderr"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen([command("minikvm"), "run", "--gdb", "127.0.0.1:0", *args],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        deadline = time.monotonic() + 20
        while True:
            match = re.search(r"gdb stub on 127\.0\.0\.1:(\d+)", self.err.read_text())
            if match:
                self.port = int(match.group(1))
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"minikvm did not start its gdb stub:\n{self.err.read_text()}")
            time.sleep(0.02)

    def finish(self, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, self.out.read_bytes(),
                                           self.err.read_bytes())


def run_gdb(gdb: str, elf: Path | None, port: int, *commands: str) -> str:
    args = [gdb, "-nx", "-batch"] + ([str(elf)] if elf else []) + ["-ex", f"target remote 127.0.0.1:{port}"]
    for line in commands:
        args += ["-ex", line]
    done = subprocess.run(args, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    return done.stdout + done.stderr


def instructions(elf: Path, mode: Mode) -> list[int]:
    real = ["-m", "i8086"] if mode is Mode.REAL else []
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", *real, str(elf)], check=True,
                          capture_output=True, text=True).stdout
    return [int(m.group(1), 16) for m in re.finditer(r"^\s+([0-9a-f]+):\t", text, re.MULTILINE)]


# --- gdb sessions -----------------------------------------------------------------------------

SESSIONS = {  # guest: (breakpoint symbol, register gdb calls the PC)
    "hello": ("next_char", "eip"),
    "hello_pm": ("uart_putc", "eip"),
    "hello_64": ("done", "rip"),
}


@pytest.mark.parametrize("accel", ACCELERATORS)
@pytest.mark.parametrize("guest", sorted(SESSIONS))
def test_break_continue_registers_memory_step_and_run_to_the_end(tmp_path: Path, gdb: str, guest: str,
                                                                 accel: str) -> None:
    mode = MODES[guest]
    allowed(accel, mode)
    symbol, pc = SESSIONS[guest]
    elf = bundled_image(guest, ".elf")
    where = symbol_address(elf, symbol)
    code = instructions(elf, mode)
    after = code[code.index(where) + 1]
    vm = Minikvm(tmp_path, "--accel", accel, "--gdb-wait", guest)
    arch = ["set architecture i8086"] if mode is Mode.REAL else []  # the ELF says i386; gdb believes it
    text = run_gdb(gdb, elf, vm.port, *arch, f"break {symbol}", "continue", "info registers",
                   "x/4i $pc", "stepi", "p/x $pc", "delete", "continue")
    proc = vm.finish()
    context = f"{text}\n{describe(proc)}"
    assert f"Breakpoint 1, {symbol} ()" in text, context
    assert re.search(rf"^{pc}\s+0x{where:x}\s", text, re.MULTILINE), context
    for name in ("cs", "ss", "eflags", "cr0"):
        assert re.search(rf"^{name}\s+0x[0-9a-f]+", text, re.MULTILINE), context
    listed = [int(a, 16) for a in re.findall(r"^(?:=> )?\s*0x([0-9a-f]+) <", text, re.MULTILINE)][:4]
    assert listed == code[code.index(where):code.index(where) + 4], context
    assert f"$1 = 0x{after:x}" in text, context  # one instruction further
    assert "[Inferior 1 (Remote target) exited normally]" in text, context
    assert proc.returncode == 0, context
    assert proc.stdout == expected_output(guest), context
    assert guest in stop_lines(proc.stderr), context


@pytest.mark.parametrize("accel", ACCELERATORS)
def test_registers_and_stack_at_a_breakpoint(tmp_path: Path, gdb: str, accel: str) -> None:
    """hello_pm calls uart_putc with the first character, 'H', in AL; its PUSH EAX puts it on the stack."""
    allowed(accel, Mode.PROTECTED)
    elf = bundled_image("hello_pm", ".elf")
    stack_top, putc = symbol_address(elf, "stack_top"), symbol_address(elf, "uart_putc")
    vm = Minikvm(tmp_path, "--accel", accel, "--gdb-wait", "hello_pm")
    text = run_gdb(gdb, elf, vm.port, "break uart_putc", "continue", "p/x $eax", "p/x $esp", "stepi",
                   "x/2xw $sp", "set var $eax = 0x21", "p/x $eax", "kill")
    proc = vm.finish()
    context = f"{text}\n{describe(proc)}"
    assert "$1 = 0x48" in text, context  # 'H'
    assert f"$2 = 0x{stack_top - 4:x}" in text, context  # CALL pushed the return address
    assert re.search(rf"0x{stack_top - 8:x}:\s+0x00000048\s+0x{symbol_address(elf, 'next_char') + 10:08x}",
                     text), context  # PUSH EAX, then CALL's return address (next_char's CALL + 5)
    assert "$3 = 0x21" in text, context
    assert proc.returncode == 130, context  # gdb's kill: minikvm ends as interrupted
    assert putc


@pytest.mark.parametrize("accel", ACCELERATORS)
def test_watchpoints_where_the_accelerator_has_them(tmp_path: Path, gdb: str, accel: str) -> None:
    allowed(accel, Mode.PROTECTED)
    elf = bundled_image("hello_pm", ".elf")
    slot = symbol_address(elf, "stack_top") - 8  # where uart_putc's PUSH EAX lands
    push_done = symbol_address(elf, "uart_putc") + 1
    vm = Minikvm(tmp_path, "--accel", accel, "--gdb-wait", "hello_pm")
    text = run_gdb(gdb, elf, vm.port, f"watch *(int *){slot:#x}", "continue", "p/x $pc", "delete", "continue")
    proc = vm.finish()
    context = f"{text}\n{describe(proc)}"
    if accel == "emu" or kvm_debug_support(Mode.PROTECTED).watchpoints:
        assert "Old value = 0" in text and "New value = 72" in text, context
        assert f"$1 = 0x{push_done:x}" in text, context  # reported after the writing instruction
    else:  # this host's KVM ignores data breakpoints (measured): Z2 is answered as unsupported
        assert "Could not insert hardware watchpoint" in text, context
    assert "[Inferior 1 (Remote target) exited normally]" in text, context
    assert proc.returncode == 0, context


def test_several_guests_are_threads(tmp_path: Path, gdb: str) -> None:
    elf = bundled_image("hello_pm", ".elf")
    vm = Minikvm(tmp_path, "--gdb-wait", "hello_pm", "hello_pm")
    text = run_gdb(gdb, elf, vm.port, "info threads", "break done", "continue", "continue", "info threads",
                   "delete", "continue")
    proc = vm.finish()
    context = f"{text}\n{describe(proc)}"
    assert re.search(r"^\*?\s+1\s+Thread 1 \(hello_pm, paused\)", text, re.MULTILINE), context
    assert re.search(r"^\*?\s+2\s+Thread 2 \(hello_pm-2, paused\)", text, re.MULTILINE), context
    hits = re.findall(r"Thread (\d) hit Breakpoint 1, done \(\)", text)
    assert sorted(hits) == ["1", "2"], context  # both guests stop there; neither stop is lost
    assert "[Inferior 1 (Remote target) exited normally]" in text, context
    assert proc.returncode == 0, context


# --- a raw client -----------------------------------------------------------------------------


class Raw:
    """The protocol by hand, for what gdb would not send."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buffer = b""

    def send(self, payload: bytes) -> None:
        self.sock.sendall(b"$%s#%02x" % (payload, sum(payload) & 0xFF))

    def packet(self) -> bytes:
        while True:
            match = re.search(rb"\$([^#]*)#[0-9a-f]{2}", self.buffer)
            if match:
                self.buffer = self.buffer[match.end():]
                self.sock.sendall(b"+")
                if match.group(1).startswith(b"O") and match.group(1) != b"OK":
                    continue  # console output
                return match.group(1)
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the stub closed the connection")
            self.buffer += data

    def ask(self, payload: bytes) -> bytes:
        self.send(payload)
        return self.packet()

    def close(self) -> None:
        self.sock.close()


SPIN = bytes([0xEB, 0xFE])  # jmp $ (real mode, at 0)


@pytest.mark.parametrize("accel", ACCELERATORS)
def test_attach_interrupt_detach_and_kill(tmp_path: Path, accel: str) -> None:
    allowed(accel, Mode.REAL)
    spin = tmp_path / "spin.bin"
    spin.write_bytes(SPIN)
    vm = Minikvm(tmp_path, "--accel", accel, "--timeout", "60", str(spin))  # no --gdb-wait: it runs
    client = Raw(vm.port)
    assert client.ask(b"?") == b"T05thread:1;"  # attaching stops it
    assert client.ask(b"p8") == b"00000000"
    client.send(b"c")
    time.sleep(0.3)
    client.sock.sendall(b"\x03")  # Ctrl-C
    assert client.packet() == b"T02thread:1;"
    assert client.ask(b"D") == b"OK"
    client.close()
    time.sleep(0.5)
    assert vm.proc.poll() is None, "detached, the guest goes on"
    client = Raw(vm.port)
    assert client.ask(b"?") == b"T05thread:1;"
    client.send(b"k")
    proc = vm.finish(20)
    assert proc.returncode == 130, describe(proc)
    assert "killed from gdb" in proc.stderr.decode(), describe(proc)


def _garbage(rng: random.Random) -> bytes:
    """One malformed, truncated or unexpected piece of a packet stream (`Framing` then vets it)."""
    commands = [b"?", b"g", b"p", b"m", b"Z", b"z", b"H", b"T", b"vCont", b"vCont?", b"qXfer:features:read:",
                b"qSupported:", b"qThreadExtraInfo,", b"qfThreadInfo", b"Q", b"q", b"v", b"D"]
    kind = rng.randrange(7)
    args = bytes(rng.choice(b"0123456789abcdef,:;=-xp#$}*") for _ in range(rng.randrange(12)))
    payload = rng.choice(commands) + args
    if kind == 0:  # random bytes, framing characters included
        return bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
    if kind == 1:  # a packet cut anywhere
        framed = b"$%s#%02x" % (payload, sum(payload) & 0xFF)
        return framed[:rng.randrange(len(framed))]
    if kind == 2:  # a wrong checksum
        return b"$%s#%02x" % (payload, (sum(payload) + 1) & 0xFF)
    if kind == 3:  # an overlong packet
        return b"$m" + b"1" * rng.randrange(20000, 40000) + b"#00"
    if kind == 4:  # acks, naks and interrupts out of place
        return bytes(rng.choice(b"+-\x03") for _ in range(rng.randrange(1, 5)))
    return b"$%s#%02x" % (payload, sum(payload) & 0xFF)  # well formed, nonsense arguments


# Packets that legitimately change the guest: a resume at an address (c/s/C/S addr), a register or
# memory write, a kill or restart, a file or process operation.
_CHANGES_THE_GUEST = (b"c", b"C", b"s", b"S", b"G", b"P", b"M", b"X", b"k", b"R", b"r", b"A", b"i", b"I", b"W",
                      b"!", b"vKill", b"vRun", b"vAttach", b"vFile", b"vFlash", b"vStopped", b"}")


class Framing:
    """The packets a stream completes, found the way the protocol frames them, to keep the fuzz honest.

    Garbage can still hold a valid packet: a '$' among the arguments starts a new packet, whose
    checksum then matches once in 256 (seen: `$qXfer:features:read:-$c5#98` resumed the guest at 5,
    so it ran off into zeroed memory). A stub that obeys it is right; the fuzz must not send it.
    From each '$' to the first '#' after it is a candidate, so a stub that starts afresh at every
    '$' and one that does not are both covered."""

    def __init__(self) -> None:
        self.pending = b""  # from the first '$' whose packet is not complete yet

    def harmless(self, piece: bytes) -> bool:
        """Would sending `piece` complete no packet that changes the guest? If so, it counts as sent."""
        data = self.pending + piece
        keep = len(data)
        start = data.find(b"$")
        while start != -1:
            end = data.find(b"#", start)
            if end == -1 or end + 3 > len(data):
                keep = min(keep, start)
            elif end + 3 > len(self.pending):  # this piece completes it
                payload = data[start + 1:end]
                valid = data[end + 1:end + 3].lower() == b"%02x" % (sum(payload) & 0xFF)
                if valid and payload.startswith(_CHANGES_THE_GUEST):
                    return False
            start = data.find(b"$", start + 1)
        self.pending = data[keep:]
        return True


def test_the_fuzz_never_sends_what_changes_the_guest() -> None:
    framing = Framing()
    assert framing.harmless(b"$qXfer:features:read:-") and not framing.harmless(b"$c5#98")  # the piece seen
    assert not Framing().harmless(b"$qXfer:features:read:-$c5#98")
    assert Framing().harmless(b"$qXfer:features:read:-$c5#99")  # a wrong checksum: the stub ignores it
    framing = Framing()
    assert framing.harmless(b"$M0,1:") and framing.harmless(b"90#")
    assert not framing.harmless(b"7d")  # completed across three pieces
    assert Framing().harmless(b"$m0,1#fa$g#67") and Framing().harmless(b"$c")


@pytest.mark.parametrize("accel", ACCELERATORS)
def test_ten_thousand_malformed_packets_and_abrupt_disconnects(tmp_path: Path, gdb: str, accel: str) -> None:
    allowed(accel, Mode.REAL)
    spin = tmp_path / "spin.bin"
    spin.write_bytes(SPIN)
    vm = Minikvm(tmp_path, "--accel", accel, "--timeout", "150", str(spin))
    rng = random.Random(1234)
    sent = 0
    while sent < 10_000:
        sock = socket.create_connection(("127.0.0.1", vm.port), timeout=10)
        drained = threading.Event()

        def drain(sock: socket.socket = sock, done: threading.Event = drained) -> None:
            try:
                while select.select([sock], [], [], 5)[0] and sock.recv(65536):
                    pass
            except (OSError, ValueError):  # ValueError: the socket was closed under select (on purpose)
                pass
            done.set()

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        framing = Framing()
        for _ in range(rng.randrange(50, 800)):
            piece = _garbage(rng)
            if not framing.harmless(piece):
                continue
            try:
                sock.sendall(piece)
            except OSError:
                break
            sent += 1
        if rng.random() < 0.5:
            try:
                sock.sendall(b"$m0,")  # disconnect in the middle of a packet
            except OSError:
                pass  # a D among the garbage detached: the stub closed first
        sock.close()  # abruptly: no detach
        reader.join(10)
        assert vm.proc.poll() is None, describe(vm.finish(1))
    # The guest and the stub are fine: a real gdb attaches, steps the jmp $, and kills it.
    text = run_gdb(gdb, None, vm.port, "set architecture i8086", "p/x $eip", "stepi", "p/x $eip", "kill")
    proc = vm.finish()
    context = f"{text}\n{describe(proc)}"
    assert "$1 = 0x0" in text and "$2 = 0x0" in text, context
    assert proc.returncode == 130, context
    assert b"Traceback" not in proc.stderr, context


# --- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--gdb", "abc"], ["--gdb", "70000"], ["--gdb", "host:"], ["--gdb", "a b:1"],
                                  ["--gdb", "[zz]:1"], ["--gdb-wait"], ["--trace", "0"], ["--trace", "x"]])
def test_bad_debugging_options_are_usage_errors(args: list[str]) -> None:
    proc = subprocess.run([command("minikvm"), "run", *args, "hello"], capture_output=True, timeout=30)
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("minikvm: error:"), describe(proc)


def test_a_port_in_use_is_a_usage_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([command("minikvm"), "run", "--gdb", str(port), "hello"], capture_output=True,
                              timeout=30)
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "cannot listen" in lines[0], describe(proc)


def test_the_stub_listens_on_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    vm = Minikvm(tmp_path, "--gdb-wait", "hello")
    assert re.search(r"gdb stub on 127\.0\.0\.1:\d+", vm.err.read_text())
    client = Raw(vm.port)
    client.send(b"k")
    assert vm.finish(20).returncode == 130


@pytest.mark.parametrize("accel", ACCELERATORS)
def test_trace_file_from_the_command_line(tmp_path: Path, accel: str) -> None:
    allowed(accel, Mode.PROTECTED)
    path = tmp_path / "trace.txt"
    proc = subprocess.run([command("minikvm"), "run", "--accel", accel, "--trace", "5", "--trace-file",
                           str(path), "hello_pm"], capture_output=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == expected_output("hello_pm"), describe(proc)
    lines = path.read_text().splitlines()
    elf = bundled_image("hello_pm", ".elf")
    assert lines[0].startswith(f"{symbol_address(elf, '_start'):08x} <_start>"), lines[:3]
    assert lines[-2].startswith(f"{symbol_address(elf, 'done') + 8:08x} <done+0x8>"), lines[-3:]
    assert "out dx, al" in lines[-2] and lines[-1] == "  … exit hypercall", lines[-3:]
    assert len(lines) > 400


@pytest.mark.parametrize("accel", ACCELERATORS)
def test_a_trace_file_that_cannot_be_written_is_reported(accel: str) -> None:
    """/dev/full: a write fails during the run (once the buffer fills) or only when the last buffered
    lines go out at the end. Either way it is said in words, and the status is 1."""
    allowed(accel, Mode.PROTECTED)
    proc = subprocess.run([command("minikvm"), "run", "--accel", accel, "--trace-file", "/dev/full", "hello_pm"],
                          capture_output=True, timeout=60)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "the trace file failed (No space left on device)" in err, describe(proc)
    assert "internal error" not in err and "Traceback" not in err, describe(proc)
