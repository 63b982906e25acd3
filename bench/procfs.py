"""Reading /proc: CPU time of a process, of the machine, load, steal and memory."""

from __future__ import annotations

import os
from pathlib import Path


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of one process so far (clock-tick resolution), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_ticks() -> list[int]:
    """The machine's CPU time counters from /proc/stat (user, nice, system, idle, ..., steal)."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def steal_percent(before: list[int], after: list[int]) -> float:
    """Share of CPU time the hypervisor gave to other guests between two cpu_ticks()."""
    spent = [b - a for a, b in zip(before, after, strict=True)]
    return 100 * spent[7] / max(sum(spent), 1)


def loadavg() -> str:
    """The 1, 5 and 15-minute load averages: other work on the machine skews every figure."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024  # the kernel's kB are KiB
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None
