"""Exit statistics for --stats: exits by reason and by port, time in guest vs in the VMM."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class ExitStats:
    exits: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_port: Counter[tuple[int, str]] = field(default_factory=Counter)  # (port, "in"|"out")
    coalesced: int = 0  # writes KVM buffered without an exit
    guest_seconds: float = 0.0
    vmm_seconds: float = 0.0

    def report(self, unclaimed: Counter[tuple[int, str]] | None = None) -> list[str]:
        lines = [f"exits: {self.exits}"
                 + (f" (+{self.coalesced} coalesced writes without an exit)" if self.coalesced else "")]
        for reason, count in self.by_reason.most_common():
            lines.append(f"  {reason:<16} {count}")
        if self.by_port:
            lines.append("port I/O exits:")
            for (port, direction), count in sorted(self.by_port.items()):
                lines.append(f"  {port:#06x} {direction:<3} {count}")
        if unclaimed:
            lines.append("unclaimed ports (no device):")
            for (port, direction), count in sorted(unclaimed.items()):
                lines.append(f"  {port:#06x} {direction:<5} {count}")
        total = self.guest_seconds + self.vmm_seconds
        if total > 0:
            lines.append(f"time: {self.guest_seconds * 1e3:.1f} ms in the guest (KVM_RUN), "
                         f"{self.vmm_seconds * 1e3:.1f} ms in the VMM "
                         f"({100 * self.vmm_seconds / total:.0f}%)")
            if self.exits:
                lines.append(f"per exit: {total / self.exits * 1e6:.1f} µs round trip")
        return lines
