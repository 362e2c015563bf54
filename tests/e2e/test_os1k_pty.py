"""The 1K OS interactively, as a person uses it: minikvm on a pseudo-terminal.

The terminal is minikvm's controlling tty, in raw mode while the guest runs:
Enter arrives as CR, Backspace as DEL, and every character on the screen is
the OS's own echo. The session types at the prompt, edits with Backspace,
runs `spin` in the background and sees it interleave, crashes a process and
gets the shell back, then powers off with 0: exit status 0 and the terminal
settings restored.
"""

from __future__ import annotations

import re

import pytest

from ..ptysession import PtySession
from .support import bundled_image, command

pytestmark = pytest.mark.timeout(180)

PROMPT = b"os1k> "


def test_interactive_session_on_a_terminal(kvm_required: None) -> None:
    image = bundled_image("os1k")
    s = PtySession([command("minikvm"), "run", "--mode", "paging", str(image), "--timeout", "150"])
    try:
        s.read_until(PROMPT)
        assert s.wait_raw(), "raw mode was never entered\n" + s.explain()

        # Type a wrong digit, erase it with Backspace (DEL), run 3 (echo); Enter is CR.
        s.type(b"9\x7f3\r")
        s.read_until(b"9\b \b3\r\n")  # the OS echoed, erased, echoed again
        s.read_until(b"echo> ")
        s.type(b"hellp\x7fo, pty\r")
        s.read_until(b"hellp\b \bo, pty\r\n")
        assert s.read_until(b"echo> ") == b"hello, pty\r\n", s.explain()
        s.type(b"quit\r")
        s.read_until(PROMPT)

        # Two busy processes in the background; the shell still answers while they run.
        s.type(b"spin &\r")
        s.read_until(b"spin running in the background")
        s.read_until(b": round 1\r\n")  # the spinners are busy now: type while they run
        s.type(b"uptime\r")
        start = s.mark
        answered = start + len(s.read_until(b" seconds ("))  # where the shell's answer is
        s.type(b"wait\r")
        s.read_until(b"spin: both spinners finished")
        s.read_until(PROMPT)
        text = s.output.decode(errors="replace").replace("\r\n", "\n")
        rounds = re.findall(r"spinner (\d+): round (\d+)", text)
        pids = sorted({pid for pid, _ in rounds})
        assert len(pids) == 2 and len(rounds) > 2 and len(rounds) % 2 == 0, s.explain()
        order = [pid for pid, _ in rounds]
        last_a = max(i for i, p in enumerate(order) if p == pids[0])
        first_b = order.index(pids[1])
        assert first_b < last_a, "the spinners did not interleave\n" + s.explain()
        spins = [m.start() for m in re.finditer(rb"spinner \d+: round", s.output)]
        assert spins[0] < answered < spins[-1], "the shell did not answer while spin ran\n" + s.explain()

        # A process that faults is killed with a report; the shell comes back.
        s.type(b"crash\r")
        s.read_until(b"crash: writing to address 0\r\n")
        report = s.read_until(b"\r\n" + PROMPT)
        assert re.fullmatch(rb"\[os\] pid \d+ \(crash\) killed: page fault writing 0x00000000 at eip 0x0100[0-9a-f]{4}",
                            report), s.explain()
        s.type(b"7\r")
        s.read_until(b"12! = 479001600\r\n")
        s.read_until(PROMPT)

        # 0 powers off through the EXIT hypercall.
        s.type(b"0\r")
        assert s.finish() == 0, s.explain()
        assert re.search(rb"\[os\] power off after \d+ ticks", s.output), s.explain()
        assert b"exit hypercall" in s.output, s.explain()
        assert s.restored(), "terminal settings were not restored"
        assert b"Traceback" not in s.output, s.explain()
    finally:
        s.close()
