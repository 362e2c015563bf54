"""The --stats report: exits by reason and by port, time in guest vs in the VMM."""

from __future__ import annotations

from collections import Counter

from ..arch.x86.exceptions import vector_name
from ..runloop import ExitStats


def stats_report(stats: ExitStats, unclaimed: Counter[tuple[int, str]] | None = None) -> list[str]:
    lines = [f"exits: {stats.exits}"
             + (f" (+{stats.coalesced} coalesced writes without an exit)" if stats.coalesced else "")]
    for reason, count in stats.by_reason.most_common():
        lines.append(f"  {reason:<16} {count}")
    if stats.by_port:
        lines.append("port I/O exits:")
        for (port, direction), count in sorted(stats.by_port.items()):
            lines.append(f"  {port:#06x} {direction:<3} {count}")
    if stats.interrupts:
        lines.append("interrupts and exceptions delivered (vector: count):")
        lines.append("  " + ", ".join(f"{vector_name(v)} {n}" for v, n in sorted(stats.interrupts.items())))
    if unclaimed:
        lines.append("unclaimed ports (no device):")
        for (port, direction), count in sorted(unclaimed.items()):
            lines.append(f"  {port:#06x} {direction:<5} {count}")
    total = stats.guest_seconds + stats.vmm_seconds
    if total > 0:
        lines.append(f"time: {stats.guest_seconds * 1e3:.1f} ms in the guest (KVM_RUN), "
                     f"{stats.vmm_seconds * 1e3:.1f} ms in the VMM "
                     f"({100 * stats.vmm_seconds / total:.0f}%)")
        if stats.exits:
            lines.append(f"per exit: {total / stats.exits * 1e6:.1f} µs round trip")
    return lines
