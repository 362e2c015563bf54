"""The gdb remote protocol without a guest: framing, checksums, escaping, every command's parser,
the target description, and a session answering from fake threads — plus fuzzing, which must
only ever produce the documented replies (E.., '', OK, data), never an exception."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minikvm.debug.gdbstub import (
    AMD64_REGS,
    EFAULT,
    EINVAL,
    I386_REGS,
    LAYOUTS,
    PACKET_SIZE,
    Ack,
    Detach,
    Garbled,
    GdbSession,
    Interrupt,
    Kill,
    Nak,
    Packet,
    PacketError,
    PacketReader,
    Resume,
    StopEvent,
    TargetError,
    checksum,
    choose_layout,
    console_output,
    escape,
    exit_reply,
    frame,
    parse_binary_write,
    parse_breakpoint,
    parse_features,
    parse_hex,
    parse_memory_read,
    parse_memory_write,
    parse_register_write,
    parse_thread_id,
    parse_vcont,
    parse_xfer_read,
    stop_reply,
    unescape,
)
from minikvm.stop import StopKind, StopReason

# --- framing -------------------------------------------------------------------------------


def test_checksum_and_frame_match_the_protocol_examples() -> None:
    assert checksum(b"OK") == 0x9A
    assert frame(b"OK") == b"$OK#9a"
    assert frame(b"") == b"$#00"
    assert frame(b"g") == b"$g#67"


@given(st.binary(max_size=200))
def test_escape_round_trips_and_hides_the_framing_bytes(data: bytes) -> None:
    escaped = escape(data)
    assert unescape(escaped) == data
    assert not set(escaped) & set(b"#$*")  # '}' appears only as the escape itself


def test_escaping_is_xor_0x20_after_a_brace() -> None:
    assert escape(b"a#b$c}d*") == b"a}\x03b}\x04c}]d}\x0a"
    assert unescape(b"}\x03}]") == b"#}"


def test_unescape_refuses_a_trailing_escape() -> None:
    with pytest.raises(PacketError) as err:
        unescape(b"abc}")
    assert err.value.code == EINVAL


def test_reader_splits_acks_interrupts_and_packets_across_any_chunking() -> None:
    stream = b"+-\x03" + frame(b"qSupported:xmlRegisters=i386") + b"noise" + frame(b"?") + b"+"
    expected = [Ack(), Nak(), Interrupt(), Packet(b"qSupported:xmlRegisters=i386"), Packet(b"?"), Ack()]
    for chunk in (1, 2, 3, 7, len(stream)):
        reader = PacketReader()
        events = []
        for i in range(0, len(stream), chunk):
            events += reader.feed(stream[i:i + chunk])
        assert [type(e) for e in events] == [type(e) for e in expected]
        assert [e for e in events if isinstance(e, Packet)] == [e for e in expected if isinstance(e, Packet)]


def test_reader_reports_a_bad_checksum_and_recovers() -> None:
    reader = PacketReader()
    events = reader.feed(b"$g#00" + b"$g#zz" + frame(b"g"))
    assert [type(e) for e in events] == [Garbled, Garbled, Packet]


def test_reader_reports_a_packet_cut_short_by_the_next_one() -> None:
    events = PacketReader().feed(b"$m10" + frame(b"?"))
    assert isinstance(events[0], Garbled) and events[0].why == "truncated packet"
    assert events[1] == Packet(b"?")


def test_reader_refuses_an_endless_packet_without_keeping_it() -> None:
    reader = PacketReader()
    reader.feed(b"$" + b"A" * (4 * PACKET_SIZE))
    events = reader.feed(b"#00" + frame(b"?"))
    assert isinstance(events[0], Garbled) and "longer" in events[0].why
    assert events[1] == Packet(b"?")
    assert len(reader._data) <= 2 * PACKET_SIZE + 64


def test_run_length_marker_is_an_ordinary_byte_in_requests() -> None:
    payload = b"M1000,2:2a2a"  # '*' only means a run in replies; gdb never encodes requests
    assert PacketReader().feed(frame(b"X1000,1:*")) == [Packet(b"X1000,1:*")]
    assert PacketReader().feed(frame(payload)) == [Packet(payload)]


# --- command parsers ---------------------------------------------------------------------------


def test_hex_numbers() -> None:
    assert parse_hex(b"1f") == 0x1F and parse_hex(b"FFFFFFFFFFFFFFFF") == (1 << 64) - 1
    for bad in (b"", b"g", b"-1", b"0x10", b"1" * 33):
        with pytest.raises(PacketError):
            parse_hex(bad)
    with pytest.raises(PacketError):
        parse_hex(b"10000000000000000")  # 2**64


def test_memory_commands() -> None:
    assert parse_memory_read(b"1000,4") == (0x1000, 4)
    assert parse_memory_write(b"1000,2:cdef") == (0x1000, b"\xcd\xef")
    assert parse_binary_write(b"2000,3:a}]b") == (0x2000, b"a}b")
    assert parse_binary_write(b"2000,0:") == (0x2000, b"")
    for bad in (b"1000", b"1000,", b",4", b"1000,4,5", b"zz,1"):
        with pytest.raises(PacketError):
            parse_memory_read(bad)
    for bad in (b"1000,2:cd", b"1000,2:cdefab", b"1000,1:c", b"1000,1:zz", b"1000,1"):
        with pytest.raises(PacketError):
            parse_memory_write(bad)
    with pytest.raises(PacketError):
        parse_binary_write(b"1000,2:a")


def test_register_write_breakpoints_threads() -> None:
    assert parse_register_write(b"8=00100000") == (8, b"\x00\x10\x00\x00")
    assert parse_breakpoint(b"0,1017,1") == (0, 0x1017, 1)
    assert parse_breakpoint(b"2,1458,4;X1,0") == (2, 0x1458, 4)  # conditions are gdb's business
    assert parse_thread_id(b"-1") == -1 and parse_thread_id(b"0") == 0 and parse_thread_id(b"a") == 10
    for bad in (b"5,0,1", b"0,1017", b"0,,1", b"x,1,1"):
        with pytest.raises(PacketError):
            parse_breakpoint(bad)
    for bad in (b"p1.1", b"-2", b""):
        with pytest.raises(PacketError):
            parse_thread_id(bad)


def test_vcont_actions() -> None:
    assert parse_vcont(b";c") == [("c", -1)]
    assert parse_vcont(b";s:1;c") == [("s", 1), ("c", -1)]
    assert parse_vcont(b";C05:2;S0b") == [("c", 2), ("s", -1)]
    for bad in (b"", b";", b";x", b";r1000,1004", b";s:zz", b";C"):
        with pytest.raises(PacketError):
            parse_vcont(bad)


def test_xfer_and_features() -> None:
    assert parse_xfer_read(b"features:read:target.xml:0,fff") == ("features", "target.xml", 0, 0xFFF)
    with pytest.raises(PacketError):
        parse_xfer_read(b"features:write:target.xml:0,fff")
    assert parse_features(b"multiprocess+;swbreak+;xmlRegisters=i386;hwbreak-") == {"multiprocess", "swbreak"}


# --- target descriptions -------------------------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(LAYOUTS))
def test_target_description_describes_exactly_the_g_packet(arch: str) -> None:
    layout = LAYOUTS[arch]
    root = ET.fromstring(layout.target_xml())
    assert root.findtext("architecture") == arch
    regs = [reg for feature in root.iter("feature") for reg in feature.iter("reg")]
    assert [r.get("name") for r in regs] == [r.name for r in layout.regs]
    assert [int(r.get("regnum")) for r in regs] == list(range(len(layout.regs)))
    assert sum(int(r.get("bitsize")) for r in regs) // 4 == len(layout.encode({}))
    core = root.find("feature[@name='org.gnu.gdb.i386.core']")
    assert core is not None and core.find("flags[@id='i386_eflags']") is not None


def test_register_order_is_gdbs() -> None:
    assert [r.name for r in I386_REGS[:10]] == ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip",
                                                "eflags"]
    assert [r.name for r in AMD64_REGS[:8]] == ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp"]
    assert AMD64_REGS[16].name == "rip" and AMD64_REGS[17].name == "eflags" and AMD64_REGS[17].bits == 32


def test_layout_choice_follows_the_guest_modes() -> None:
    assert choose_layout(["i8086"]).architecture == "i8086"
    assert choose_layout(["i8086", "i386"]).architecture == "i386"
    assert choose_layout(["i386", "i386:x86-64"]).architecture == "i386:x86-64"
    assert choose_layout([]).architecture == "i386"


# --- replies ----------------------------------------------------------------------------------


def test_stop_replies_name_the_thread_and_only_negotiated_reasons() -> None:
    assert stop_reply(StopEvent(), 1, set()) == b"T05thread:1;"
    assert stop_reply(StopEvent(5, "swbreak"), 2, {"swbreak"}) == b"T05swbreak:;thread:2;"
    assert stop_reply(StopEvent(5, "swbreak"), 2, set()) == b"T05thread:2;"
    assert stop_reply(StopEvent(5, "watch", 0x1458), 1, set()) == b"T05watch:1458;thread:1;"
    assert stop_reply(StopEvent(2), 11, set()) == b"T02thread:b;"


def test_exit_replies() -> None:
    def stop(kind: StopKind, code: int = 0) -> StopReason:
        return StopReason(kind, "x", exit_code=code)

    assert exit_reply([stop(StopKind.HALT)]) == b"W00"
    assert exit_reply([stop(StopKind.EXIT_HYPERCALL), stop(StopKind.HALT)]) == b"W00"
    assert exit_reply([stop(StopKind.DEBUG_EXIT, 3)]) == b"W03"
    assert exit_reply([stop(StopKind.UNKNOWN_HYPERCALL)]) == b"W01"
    assert exit_reply([stop(StopKind.TRIPLE_FAULT)]) == b"X0b"
    assert exit_reply([stop(StopKind.HALT), stop(StopKind.INTERNAL_ERROR)]) == b"X04"
    assert exit_reply([stop(StopKind.TIMEOUT), stop(StopKind.TRIPLE_FAULT)]) == b"X0b"  # status 1 before 124
    assert exit_reply([stop(StopKind.INTERRUPTED), stop(StopKind.TRIPLE_FAULT)]) == b"X02"
    assert console_output("hi\n") == b"O68690a"


# --- a session against fake threads ------------------------------------------------------------


class FakeThread:
    def __init__(self, tid: int, arch: str = "i386", memory: int = 0x2000) -> None:
        self.tid = tid
        self.name = f"guest{tid}"
        self.event: StopEvent | None = StopEvent()
        self.stop: StopReason | None = None
        self.alive = True
        self.arch = arch
        self.regs = {"rax": 0x11223344, "rbx": 2, "rcx": 3, "rdx": 4, "rsi": 5, "rdi": 6, "rsp": 0x1F00,
                     "rbp": 8, **{f"r{n}": n for n in range(8, 16)}, "rip": 0x1000, "rflags": 0x46, "cs": 8,
                     "ss": 0x10, "ds": 0x10, "es": 0x10, "fs": 0x10, "gs": 0x10, "cr0": 0x11, "cr2": 0,
                     "cr3": 0, "cr4": 0, "efer": 0}
        self.memory = bytearray(range(256)) * (memory // 256)
        self.points: set[tuple[int, int, int]] = set()
        self.steppable = True

    def architecture(self) -> str:
        return self.arch

    def register_values(self) -> dict[str, int]:
        return dict(self.regs)

    def write_register(self, source: str, value: int) -> None:
        if source in ("cs", "cr0"):
            raise TargetError(1, "no")
        self.regs[source] = value

    def read_memory(self, addr: int, length: int) -> bytes:
        return bytes(self.memory[addr:addr + length])

    def write_memory(self, addr: int, data: bytes) -> None:
        if addr + len(data) > len(self.memory):
            raise TargetError(EFAULT, "outside")
        self.memory[addr:addr + len(data)] = data

    def insert(self, kind: int, addr: int, length: int) -> bool:
        if kind == 3:
            return False
        if len(self.points) >= 4:
            raise TargetError(28, "full")
        self.points.add((kind, addr, length))
        return True

    def remove(self, kind: int, addr: int, length: int) -> bool:
        self.points.discard((kind, addr, length))
        return kind != 3

    def can_step(self) -> bool:
        return self.steppable


def session(*threads: FakeThread) -> GdbSession:
    return GdbSession(list(threads) or [FakeThread(1)])


def test_handshake() -> None:
    s = session()
    reply = s.handle(b"qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386")
    assert isinstance(reply, bytes)
    assert set(reply.split(b";")) == {b"PacketSize=4000", b"qXfer:features:read+", b"swbreak+", b"hwbreak+",
                                      b"vContSupported+", b"QStartNoAckMode+"}
    assert s.handle(b"QStartNoAckMode") == b"OK" and s.no_ack
    assert s.handle(b"vMustReplyEmpty") == b""
    assert s.handle(b"?") == b"T05thread:1;"
    assert s.handle(b"qAttached") == b"1" and s.handle(b"qAttached:1") == b"1"
    assert s.handle(b"qC") == b"QC1"
    assert s.handle(b"qSymbol::") == b"OK"
    assert s.handle(b"qTStatus") == b"" and s.handle(b"!") == b""


def test_target_xml_is_served_in_pieces() -> None:
    s = session()
    document = b""
    offset = 0
    while True:
        reply = s.handle(b"qXfer:features:read:target.xml:%x,40" % offset)
        assert isinstance(reply, bytes) and reply[:1] in (b"m", b"l")
        document += unescape(reply[1:])
        offset += len(unescape(reply[1:]))
        if reply[:1] == b"l":
            break
    assert document == LAYOUTS["i386"].target_xml()
    assert s.handle(b"qXfer:features:read:other.xml:0,100") == b"E00"
    assert s.handle(b"qXfer:libraries:read::0,100") == b""


def test_registers_read_and_write() -> None:
    thread = FakeThread(1)
    s = session(thread)
    g = s.handle(b"g")
    assert isinstance(g, bytes)
    assert g.startswith(b"44332211" + b"03000000" + b"04000000" + b"02000000")  # eax ecx edx ebx
    assert g[8 * 8:8 * 9] == b"00100000"  # eip
    assert b"x" * 20 in g  # st0: not available
    assert s.handle(b"p8") == b"00100000"
    assert s.handle(b"p10") == b"x" * 20  # st0
    assert s.handle(b"P8=34120000") == b"OK" and thread.regs["rip"] == 0x1234
    assert s.handle(b"P0=ffffffff") == b"OK" and thread.regs["rax"] == 0xFFFFFFFF
    assert s.handle(b"Pa=08000000") == b"E01"  # cs
    assert s.handle(b"P8=1234") == b"E16"  # wrong size
    assert s.handle(b"p999") == b"E16"
    g = s.handle(b"g")
    assert isinstance(g, bytes)
    changed = b"78563412" + g[8:]
    assert s.handle(b"G" + changed) == b"OK" and thread.regs["rax"] == 0x12345678
    assert s.handle(b"G" + g[:-2]) == b"E16"


def test_registers_64_bit_layout() -> None:
    thread = FakeThread(1, "i386:x86-64")
    s = session(thread)
    g = s.handle(b"g")
    assert isinstance(g, bytes) and g.startswith(b"4433221100000000" + b"0200000000000000")  # rax rbx
    assert s.handle(b"p10") == b"0010000000000000"  # rip
    assert s.handle(b"p11") == b"46000000"  # eflags, 32 bits


def test_memory_read_write() -> None:
    thread = FakeThread(1)
    s = session(thread)
    assert s.handle(b"m10,4") == b"10111213"
    assert s.handle(b"m1ffe,10") == b"feff"  # partial: what is readable
    assert s.handle(b"m5000,4") == b"E0e"
    assert s.handle(b"M20,2:abcd") == b"OK" and thread.memory[0x20:0x22] == b"\xab\xcd"
    assert s.handle(b"X30,2:}]}\x03") == b"OK" and thread.memory[0x30:0x32] == b"}#"
    assert s.handle(b"X30,0:") == b"OK"
    assert s.handle(b"M1fff,2:0000") == b"E0e"
    assert s.handle(b"m10") == b"E16"


def test_breakpoints_reach_every_thread_and_report_unsupported_kinds() -> None:
    a, b = FakeThread(1), FakeThread(2)
    s = session(a, b)
    assert s.handle(b"Z0,1017,1") == b"OK"
    assert (0, 0x1017, 1) in a.points and (0, 0x1017, 1) in b.points
    assert s.handle(b"Z3,1458,4") == b""  # no read watchpoints here
    assert s.handle(b"z0,1017,1") == b"OK" and not a.points and not b.points
    for n in range(4):
        assert s.handle(b"Z1,%x,1" % n) == b"OK"
    assert s.handle(b"Z1,99,1") == b"E1c"  # no free slot
    assert (1, 0x99, 1) not in a.points  # rolled back


def test_threads() -> None:
    a, b = FakeThread(1), FakeThread(2)
    s = session(a, b)
    assert s.handle(b"qfThreadInfo") == b"m1,2" and s.handle(b"qsThreadInfo") == b"l"
    assert s.handle(b"Hg2") == b"OK" and s.handle(b"qC") == b"QC2"
    assert s.handle(b"Hg0") == b"OK" and s.handle(b"Hc-1") == b"OK"
    assert s.handle(b"Hg7") == b"E16" and s.handle(b"Hx1") == b"E16"
    assert s.handle(b"T2") == b"OK" and s.handle(b"T9") == b"E01"
    extra = s.handle(b"qThreadExtraInfo,2")
    assert isinstance(extra, bytes) and bytes.fromhex(extra.decode()).startswith(b"guest2")
    b.alive = False
    assert s.handle(b"qfThreadInfo") == b"m1" and s.handle(b"T2") == b"E01"


def test_resume_commands() -> None:
    a, b = FakeThread(1), FakeThread(2)
    s = session(a, b)
    assert s.handle(b"vCont?") == b"vCont;c;C;s;S"
    assert s.handle(b"c") == Resume({1: "c", 2: "c"})
    assert s.handle(b"vCont;c") == Resume({1: "c", 2: "c"})
    assert s.handle(b"vCont;s:2;c") == Resume({2: "s", 1: "c"})
    assert s.handle(b"vCont;s:1") == Resume({1: "s"})
    assert s.handle(b"vCont;t:1") == Resume({})
    assert s.handle(b"Hc2") == b"OK" and s.handle(b"s") == Resume({1: "c", 2: "s"})
    assert s.handle(b"s2000") == Resume({1: "c", 2: "s"}) and b.regs["rip"] == 0x2000
    assert s.handle(b"C05") == Resume({1: "c", 2: "c"})
    a.steppable = False
    assert s.handle(b"vCont;s:1") == b"E01"
    assert isinstance(s.handle(b"D"), Detach) and isinstance(s.handle(b"D;1"), Detach)
    assert isinstance(s.handle(b"k"), Kill) and isinstance(s.handle(b"vKill;1"), Kill)


def test_stop_reply_when_every_guest_has_ended() -> None:
    a = FakeThread(1)
    a.alive = False
    a.stop = StopReason(StopKind.EXIT_HYPERCALL, "exit hypercall")
    assert session(a).handle(b"?") == b"W00"
    a.stop = StopReason(StopKind.TRIPLE_FAULT, "triple fault")
    assert session(a).handle(b"?") == b"X0b"


# --- fuzzing ------------------------------------------------------------------------------------

_REPLY = re.compile(rb"^(|OK|E[0-9a-f]{2}|[0-9a-fx]+|T[0-9a-f]{2}.*|[WX][0-9a-f]{2}|QC[0-9a-f]+|[ml].*|1|l|"
                    rb"vCont;c;C;s;S|PacketSize=.*)$", re.DOTALL)
_COMMANDS = [b"?", b"g", b"G", b"p", b"P", b"m", b"M", b"X", b"Z", b"z", b"H", b"T", b"c", b"s", b"C", b"S",
             b"D", b"k", b"vCont", b"vCont;", b"vCont?", b"qSupported:", b"qXfer:features:read:target.xml:",
             b"qC", b"qfThreadInfo", b"qsThreadInfo", b"qAttached", b"qThreadExtraInfo,", b"QStartNoAckMode",
             b"q", b"Q", b"v", b"qXfer:"]


def _check(reply: object) -> None:
    if isinstance(reply, bytes):
        assert _REPLY.match(reply), reply
    else:
        assert isinstance(reply, Resume | Detach | Kill)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_reader_never_raises(data: bytes) -> None:
    reader = PacketReader()
    for event in reader.feed(data):
        assert isinstance(event, Ack | Nak | Interrupt | Packet | Garbled)


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(_COMMANDS), st.binary(max_size=80), st.sampled_from(["i386", "i386:x86-64", "i8086"]))
def test_fuzz_session_answers_only_documented_replies(command: bytes, args: bytes, arch: str) -> None:
    s = session(FakeThread(1, arch), FakeThread(2, arch))
    _check(s.handle(command + args))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([b"m1000,4", b"M1000,2:abcd", b"X1000,2:ab", b"P8=00100000", b"Z0,1017,1",
                                 b"vCont;s:1;c", b"qXfer:features:read:target.xml:0,fff", b"Hg2", b"G00"]),
                min_size=1, max_size=5),
       st.data())
def test_fuzz_truncated_packets(packets: list[bytes], data: st.DataObject) -> None:
    """Valid packets cut anywhere, as a flaky link would deliver them, through reader and session."""
    reader = PacketReader()
    s = session(FakeThread(1), FakeThread(2))
    stream = b""
    for payload in packets:
        framed = frame(payload)
        stream += framed[:data.draw(st.integers(0, len(framed)))]
    stream += frame(b"?")
    events = reader.feed(stream)
    assert events and events[-1] == Packet(b"?")
    for event in events:
        if isinstance(event, Packet):
            _check(s.handle(event.payload))
