"""The large-output bench's rows, its targets and the table it prints."""

from __future__ import annotations

from dataclasses import dataclass

from bench.report import mark

# Targets from the issue: peak RSS growth while answering.
TARGET_ONE_MIB = 32.0  # per 256 MiB output, on every path
TARGET_FOUR_MIB = 64.0  # four 256 MiB outputs answered at once
TARGET_OUTPUT_MIB = 256


@dataclass
class Row:
    path: str
    output_mib: int
    growth_mib: float  # peak RSS growth of the gateway that answered
    wall_s: float
    direct_s: float | None  # the same output straight from ComfyUI
    note: str = ""

    @property
    def verdict(self) -> str:
        """PASS or MISS against the issue's bar; '-' where the bar is not about this run."""
        if self.output_mib != TARGET_OUTPUT_MIB:
            return "-"
        if self.path.startswith("sync x"):
            return mark(self.growth_mib <= TARGET_FOUR_MIB)
        return mark(self.growth_mib <= TARGET_ONE_MIB)


def print_report(rows: list[Row], *, load_before: str, load_after: str) -> None:
    print("\nPeak RSS growth of the answering gateway (VmHWM after - RSS before), one job each")
    print(
        f"  {'path':<12}{'output':>8}{'growth':>12}{'x output':>10}{'wall':>9}"
        f"{'direct':>9}{'x direct':>10}  target"
    )
    for row in rows:
        direct = f"{row.direct_s:8.2f}s" if row.direct_s is not None else f"{'-':>9}"
        ratio = f"{row.wall_s / row.direct_s:9.2f}x" if row.direct_s else f"{'-':>10}"
        print(
            f"  {row.path:<12}{row.output_mib:>5} MiB{row.growth_mib:>8.1f} MiB"
            f"{row.growth_mib / row.output_mib:>9.2f}x{row.wall_s:>8.2f}s{direct}{ratio}"
            f"  {row.verdict}"
        )
        if row.note:
            print(f"  {'':<12}{row.note}")
    print(
        f"\nTargets (issue 24): at most {TARGET_ONE_MIB:.0f} MiB per {TARGET_OUTPUT_MIB} MiB "
        f"output on every path; at most {TARGET_FOUR_MIB:.0f} MiB for four at once "
        f"(sync x4). '-': not a {TARGET_OUTPUT_MIB} MiB run; the ratio column says how a "
        "path scales."
    )
    print(f"Load average before {load_before}, after {load_after} (other work skews wall times)")
