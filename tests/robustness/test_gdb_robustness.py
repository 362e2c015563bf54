"""The GDB stub (minikvm/debug/gdbstub.py) against a hostile client.

tests/e2e/test_gdb.py already sends 10,000 malformed and truncated packets
with abrupt disconnects, and drives a real gdb. This adds:

- loopback by default: `--gdb PORT` listens on 127.0.0.1 only;
- memory through the stub is bounds-checked: `m`, `M` and `X` at addresses
  and lengths outside guest RAM (and across its end, above 4 GiB,
  non-canonical, through unmapped pages) answer an error or the bytes that
  are there, never touch anything else, in real, protected, --paging and
  long mode; a hypothesis run of random reads and writes checks the same;
- WELL_FORMED well-formed packets with hostile arguments (every command
  letter but kill, detach and resume; register writes, breakpoints,
  watchpoints, thread selections, qXfer offsets with huge or odd values):
  each gets a reply within REPLY_BOUND seconds, and the stub and the guest
  are fine afterwards.
"""

from __future__ import annotations

import random
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .randguest import kvm_can_run
from .support import minikvm_command

pytestmark = pytest.mark.timeout(240)

REPLY_BOUND = 5.0
WELL_FORMED = 10_000
RAM = 4 << 20
SPIN = bytes([0xEB, 0xFE])  # jmp $ (the same bytes in every mode)
MARK = b"minikvm-gdb-bounds"  # after the jmp: known bytes to read back


class Stub:
    """`minikvm run --gdb PORT` with a spinning guest, and a plain protocol client on it."""

    def __init__(self, accel: str, mode: str, address: str = "0") -> None:
        self.dir = tempfile.TemporaryDirectory()
        image = Path(self.dir.name) / "spin.bin"
        image.write_bytes(SPIN + MARK)
        self.err = open(Path(self.dir.name) / "stderr", "w+b")  # noqa: SIM115 (closed in finish)
        self.proc = subprocess.Popen([minikvm_command(), "run", "--accel", accel, "--mode", mode, "--memory",
                                      str(RAM), "--timeout", "200", "--gdb", address, str(image)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.err)
        deadline = time.monotonic() + 20
        match = None
        while match is None and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.05)
            self.err.seek(0)
            match = re.search(rb"gdb stub on (\S+):(\d+)", self.err.read())
        assert match, f"no 'gdb stub on' line: {self.stderr()}"
        self.host, self.port = match[1].decode(), int(match[2])
        self.sock: socket.socket | None = None
        self.buffer = b""

    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read().decode(errors="replace")

    def connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=REPLY_BOUND)
        self.buffer = b""
        assert self.ask(b"QStartNoAckMode") == b"OK"

    def send(self, payload: bytes) -> None:
        assert self.sock is not None
        self.sock.sendall(b"$%s#%02x" % (payload, sum(payload) & 0xFF))

    def reply(self) -> bytes:
        assert self.sock is not None
        while True:
            match = re.search(rb"\$([^#]*)#[0-9a-f]{2}", self.buffer, re.DOTALL)
            if match:
                self.buffer = self.buffer[match.end():]
                payload = match.group(1)
                if payload.startswith(b"O") and payload != b"OK":
                    continue  # console output
                return payload
            data = self.sock.recv(65536)  # raises TimeoutError past REPLY_BOUND
            if not data:
                raise EOFError("the stub closed the connection")
            self.buffer += data.lstrip(b"+")

    def ask(self, payload: bytes) -> bytes:
        self.send(payload)
        return self.reply()

    def read(self, addr: int, length: int) -> bytes | None:
        answer = self.ask(b"m%x,%x" % (addr, length))
        if re.fullmatch(rb"E[0-9a-f]{2}", answer):
            return None
        return bytes.fromhex(answer.decode())

    def finish(self) -> tuple[int, str]:
        """Kill the guest from gdb; minikvm must then exit on its own."""
        if self.sock is None:
            self.connect()
        self.send(b"k")
        try:
            status = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"minikvm did not exit after 'k': {self.stderr()}") from None
        return status, self.stderr()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.err.close()
        self.dir.cleanup()


# (accelerator, mode, where the image is loaded as a linear address)
CASES = [("kvm", "real", 0), ("emu", "real", 0), ("kvm", "protected", 0x1000), ("emu", "protected", 0x1000),
         ("emu", "paging", 0x80001000), ("kvm", "long", 0x1000), ("emu", "long", 0x1000)]


def usable(accel: str, mode: str, request: pytest.FixtureRequest) -> None:
    if accel == "kvm":
        request.getfixturevalue("kvm_required")
        if not kvm_can_run(mode):
            pytest.skip(f"this host's KVM cannot run {mode} mode (the software CPU case runs it)")


@pytest.fixture
def stub(request: pytest.FixtureRequest) -> Iterator[tuple[Stub, int, str]]:
    accel, mode, load = request.param
    usable(accel, mode, request)
    session = Stub(accel, mode)
    try:
        session.connect()
        yield session, load, mode
    finally:
        session.close()


def assert_ends_cleanly(session: Stub) -> None:
    assert session.ask(b"?").startswith(b"T"), "the stub no longer reports the stopped guest"
    status, stderr = session.finish()
    assert status == 130, stderr
    assert "killed from gdb" in stderr and "Traceback" not in stderr, stderr


# --- loopback -------------------------------------------------------------------------------------


def listening_addresses(port: int) -> list[str]:
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.append(address)
    return found


def non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_listens_on_loopback_only_by_default() -> None:
    session = Stub("emu", "real", address="0")
    try:
        assert session.host == "127.0.0.1", session.stderr()
        assert listening_addresses(session.port) == ["0100007F"], listening_addresses(session.port)
        other = non_loopback_address()
        if other is not None:
            with pytest.raises(OSError):
                socket.create_connection((other, session.port), timeout=2).close()
        session.connect()
        assert_ends_cleanly(session)
    finally:
        session.close()


# --- memory through the stub ------------------------------------------------------------------------


@pytest.mark.parametrize("stub", CASES, indirect=True, ids=[f"{a}-{m}" for a, m, _ in CASES])
def test_memory_commands_stay_inside_guest_ram(stub: tuple[Stub, int, str]) -> None:
    session, load, mode = stub
    assert session.read(load, len(SPIN + MARK)) == SPIN + MARK
    end = RAM if mode != "paging" else 0x80000000 + (4 << 20)  # the --paging layout maps 4 MiB up there
    tail = session.read(end - 4, 64)  # across the end of RAM: the bytes up to the end, no more
    assert tail is not None and len(tail) == 4, tail
    for addr, length in ((end, 1), (end + 0x1000, 16), (0xFFFFF000, 16), (1 << 32, 8), (0x7FFFFFFFFFF0, 8),
                         (0x8000000000000000, 8), ((1 << 64) - 8, 8), (0xFFFFFFFFFFFFFFFF, 1)):
        assert session.read(addr, length) is None, f"m{addr:x},{length:x} read something outside RAM"
    before = session.read(end - 8, 8)
    for addr, data in ((end - 2, b"\xaa" * 4), (end, b"\xaa"), (1 << 32, b"\xaa" * 8), ((1 << 64) - 2, b"\xaa" * 4)):
        answer = session.ask(b"M%x,%x:%s" % (addr, len(data), data.hex().encode()))
        assert re.fullmatch(rb"E[0-9a-f]{2}", answer), f"M{addr:x} outside RAM answered {answer!r}"
        answer = session.ask(b"X%x,%x:%s" % (addr, len(data), data))
        assert re.fullmatch(rb"E[0-9a-f]{2}", answer), f"X{addr:x} outside RAM answered {answer!r}"
    assert session.read(end - 8, 8) == before, "a refused write across the end of RAM changed RAM"
    assert session.read(load + len(SPIN), len(MARK)) == MARK
    assert_ends_cleanly(session)


ADDRESSES = st.one_of(st.integers(0, 1 << 64).map(lambda a: min(a, (1 << 64) - 1)),
                      st.integers(RAM - 64, RAM + 64), st.integers(0, 0x2000),
                      st.integers((1 << 32) - 64, (1 << 32) + 64))


@pytest.mark.parametrize("accel", ["kvm", "emu"])
def test_random_memory_commands(accel: str, request: pytest.FixtureRequest) -> None:
    """Protected mode, paging off: linear = physical, so a reply can be checked against RAM's bounds."""
    usable(accel, "protected", request)
    session = Stub(accel, "protected")
    try:
        session.connect()

        @settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        @given(addr=ADDRESSES, length=st.integers(0, 80), write=st.booleans())
        def check(addr: int, length: int, write: bool) -> None:
            inside = addr + length <= RAM
            code = range(0x1000, 0x1000 + len(SPIN + MARK))
            if write and length and not (addr < code.stop and code.start < addr + length):  # the guest stays put
                data = bytes((addr + i) & 0xFF for i in range(length))
                answer = session.ask(b"M%x,%x:%s" % (addr, length, data.hex().encode()))
                assert (answer == b"OK") == inside, (hex(addr), length, answer)
                if inside:
                    assert session.read(addr, length) == data
                return
            got = session.read(addr, length) if length else b""
            if length == 0:
                return
            if inside:
                assert got is not None and len(got) == length
            elif addr < RAM:
                assert got is not None and len(got) == RAM - addr, (hex(addr), length, got)
            else:
                assert got is None, (hex(addr), length, got)

        check()
        assert session.read(0x1000, len(SPIN)) == SPIN, "the guest's code was overwritten"
        assert_ends_cleanly(session)
    finally:
        session.close()


# --- well-formed packets, hostile arguments --------------------------------------------------------


def _hostile(rng: random.Random) -> bytes:
    def num() -> bytes:
        return b"%x" % rng.choice((0, 1, 0xF, 0x1000, RAM, RAM - 1, 1 << 32, (1 << 64) - 1, rng.randrange(1 << 64),
                                   rng.randrange(1 << 16)))

    def data(n: int) -> bytes:
        return bytes(rng.randrange(256) for _ in range(n)).hex().encode()

    kind = rng.randrange(16)
    if kind == 0:
        return b"m" + num() + b"," + num()
    if kind == 1:
        n = rng.randrange(0, 32)
        return b"M" + num() + b",%x:" % rng.choice((n, n + 1, 0)) + data(n)
    if kind == 2:
        n = rng.randrange(0, 32)
        raw = bytes(rng.choice(b"\x00\x01}#$*abc") for _ in range(n))
        return b"X" + num() + b",%x:" % n + raw.replace(b"}", b"}]").replace(b"#", b"}\x03").replace(b"$", b"}\x04")
    if kind == 3:
        return b"p" + num()
    if kind == 4:
        return b"P%x=" % rng.randrange(0, 80) + data(rng.choice((2, 4, 8, 10, 16, 3)))
    if kind == 5:
        return b"G" + data(rng.randrange(0, 700))
    if kind == 6:
        return rng.choice((b"Z", b"z")) + b"%x," % rng.randrange(0, 6) + num() + b"," + num()
    if kind == 7:
        return b"H" + rng.choice((b"g", b"c", b"x")) + rng.choice((b"0", b"-1", b"1", b"2", b"p1.1", b"ffff", num()))
    if kind == 8:
        return b"T" + num()
    if kind == 9:
        return b"qXfer:features:read:" + rng.choice((b"target.xml", b"i386-64bit.xml", b"x.xml", b"")) + b":" + \
            num() + b"," + num()
    if kind == 10:
        return rng.choice((b"qSupported:multiprocess+;swbreak+;xmlRegisters=i386", b"qfThreadInfo", b"qsThreadInfo",
                           b"qC", b"qAttached", b"qOffsets", b"qThreadExtraInfo," + num(), b"qSymbol::", b"qTStatus",
                           b"qRcmd," + data(rng.randrange(8)), b"QThreadEvents:1", b"QNonStop:1"))
    if kind == 11:
        return b"vCont?"
    if kind == 12:
        return rng.choice((b"vMustReplyEmpty", b"vFile:open:" + data(4), b"vAttach;" + num(),
                           b"vRun;" + data(3)))
    if kind == 13:
        return b"?"
    if kind == 14:
        return b"g"
    return bytes([rng.choice(b"ABEFIJKLNORUVWYabdefhijlnortuwxy!")]) + data(rng.randrange(4))


@pytest.mark.parametrize("stub", [c for c in CASES if c[1] in ("real", "long")], indirect=True,
                         ids=[f"{a}-{m}" for a, m, _ in CASES if m in ("real", "long")])
def test_well_formed_hostile_packets(stub: tuple[Stub, int, str]) -> None:
    session, _, _ = stub
    rng = random.Random(20240607)
    started = time.monotonic()
    for index in range(WELL_FORMED):
        payload = _hostile(rng)
        sent = time.monotonic()
        try:
            session.ask(payload)
        except (TimeoutError, EOFError, OSError) as err:
            raise AssertionError(f"packet {index} {payload[:80]!r}: no reply ({err!r})\n{session.stderr()}") from None
        assert time.monotonic() - sent <= REPLY_BOUND
    elapsed = time.monotonic() - started
    assert session.proc.poll() is None, session.stderr()
    assert_ends_cleanly(session)
    print(f"{WELL_FORMED} packets in {elapsed:.1f} s")
