"""The spool: a gateway's folder for finished outputs, swept when its gateway is gone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.jobs.spool import LOCK, PREFIX, SWEEP_MIN_AGE_S, Spool

# A gateway killed with its spool left behind: a real process that makes one and dies.
KILLED = """
import os, sys
from pathlib import Path
from app.jobs.spool import Spool
spool = Spool(Path(sys.argv[1]))
print(spool.root, flush=True)
os._exit(0)  # no clean stop: the folder stays, its lock dies with the process
"""


def aged(folder: Path) -> None:
    old = os.stat(folder).st_mtime - SWEEP_MIN_AGE_S - 5
    os.utime(folder, (old, old))


def left_by_a_dead_gateway(parent: Path) -> Path:
    out = subprocess.run([sys.executable, "-c", KILLED, str(parent)], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).parents[2])  # fmt: skip
    folder = Path(out.stdout.strip())
    (folder / "video.mp4").write_bytes(b"x" * 1000)
    aged(folder)
    return folder


async def test_a_starting_gateway_removes_the_spools_of_gateways_that_are_gone(
    tmp_path: Path,
) -> None:
    dead = left_by_a_dead_gateway(tmp_path)
    live = Spool(tmp_path)  # another gateway, running
    aged(live.root)
    young = tmp_path / f"{PREFIX}999999-young"  # just made: its owner may not have locked it
    young.mkdir()
    other = tmp_path / "not-a-spool"
    other.mkdir()
    aged(other)
    starting = Spool(tmp_path)
    assert not dead.exists()
    assert live.root.is_dir() and young.is_dir() and other.is_dir()
    assert (live.root / LOCK).exists() and starting.root.is_dir()
    await live.aclose()
    await starting.aclose()
    assert not live.root.exists() and not starting.root.exists()
