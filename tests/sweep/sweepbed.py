"""The rollback sweep: a spawn bed (:mod:`xhost.testing.spawnbed`) in
real-network mode, its calls failed one at a time, and what is left after
each failure (:mod:`xhost.testing.leftovers`)."""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xhost.compute import spawn
from xhost.compute.api import SpawnError
from xhost.testing import leftovers, spawnbed
from xhost.testing.realfixtures import component_guard, require_root_or_skip
from xhost.testing.spawnbed import BACKENDS, HANDLERS, SpawnBed

__all__ = ["BACKENDS", "HANDLERS", "SpawnBed", "bed_factory", "describe", "shape", "sweep"]

#: The code of every injected failure: no caller treats it specially.
FAULT_CODE = "XHOST_SWEEP_FAULT"


def bed_factory(tmp_path: Path, make_conf: Callable[..., Any]) -> Iterator[Callable[..., SpawnBed]]:
    """``make_bed(handler, backend, extras=False)``: a :class:`SpawnBed`
    (see :func:`xhost.testing.spawnbed.build`) in real-network mode."""
    require_root_or_skip("the rollback sweep (real-network mode)")
    made: list[SpawnBed] = []

    def make(handler: str, backend: str, extras: bool = False) -> SpawnBed:
        workdir = tmp_path / f"{handler}-{backend}-{len(made)}"
        with component_guard():
            bed = spawnbed.build(workdir, handler, backend, extras, load_conf=make_conf)
        made.append(bed)
        return bed

    yield make
    for bed in made:
        bed.close()


# -- the sweep ------------------------------------------------------------------

SERVER = "sweep-vm"
def shape(server: Any) -> tuple[Any, ...]:
    """What a spawn that carried on past a failure must still have made."""
    return (server.status, server.power_state,
            sorted((d["userdevice"], d["type"], d.get("kind", "")) for d in server.disks),
            sorted(p["network"] for p in server.ports))


@dataclass
class Attempt:
    index: int
    call: str
    outcome: str  # "failed" or "absorbed"
    error: str = ""


@dataclass
class SweepReport:
    attempts: list[Attempt] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    calls: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        failed = sum(a.outcome == "failed" for a in self.attempts)
        return (f"{self.calls} calls swept in {self.seconds:.1f}s: {failed} failed spawns, "
                f"{len(self.attempts) - failed} absorbed; {len(self.problems)} problems")


def _check_error(attempt: Attempt, exc: Exception) -> list[str]:
    text = str(exc)
    problems = []
    if not isinstance(exc, SpawnError):
        problems.append(f"a {type(exc).__name__}, not a SpawnError")
    steps = [name for name, _ in spawn.STEPS] + ["preparing", "checking the server name",
                                                  "reading the image"]
    if not any(f"{step} failed" in text for step in steps):
        problems.append("the error names no spawn step")
    if FAULT_CODE not in text:
        problems.append(f"the error does not give the XAPI code {FAULT_CODE}")
    method, _, plugin_fn = attempt.call.partition(" ")
    what = plugin_fn or method
    if what not in text:
        problems.append(f"the error does not name {what}")
    if "Everything the attempt had created was removed" not in text or " except: " in text:
        problems.append("the rollback did not remove everything")
    return [f"#{attempt.index} {attempt.call}: {p}: {text}" for p in problems]


def sweep(bed: SpawnBed, *, cache_hit: bool, stop_on_problem: bool = False) -> SweepReport:
    """Sweep a spawn on ``bed`` (see the module docstring)."""
    report = SweepReport()
    started = time.monotonic()
    controls = bed.sim.controls
    # A Compute that has already spawned (its dom0 handshake done), as a
    # long-running one is; the image cached or not.
    bed.spawn(SERVER)
    expected = shape(bed.compute.show_server(SERVER))
    bed.compute.delete_server(SERVER)
    if not cache_hit:
        bed.drop_cache()
    before = bed.capture()
    for index in itertools.count(1):
        rule = controls.add_fault("*", [FAULT_CODE, f"sweep fault #{index}"], nth=index)
        error: Exception | None = None
        try:
            bed.spawn(SERVER)
        except Exception as exc:
            error = exc
        finally:
            controls.clear_faults()
        if not rule.fired:
            assert error is None, error
            report.calls = index - 1
            bed.compute.delete_server(SERVER)
            if not cache_hit:
                bed.drop_cache()
            left = leftovers.leftovers(before, bed.capture())
            if left:
                report.problems.append(f"a spawn and delete left {left}")
            break
        attempt = Attempt(index, rule.hit or "?", "failed" if error else "absorbed",
                          str(error or ""))
        report.attempts.append(attempt)
        if error is None:
            # Survivable: destroying a finished task (XAPI collects it),
            # reading back the server made. The server must be whole.
            got = shape(bed.compute.show_server(SERVER))
            if got != expected:
                report.problems.append(f"#{index} {attempt.call}: the spawn went on and "
                                       f"made {got}, not {expected}")
            bed.compute.delete_server(SERVER)
        else:
            report.problems += _check_error(attempt, error)
            if bed.compute.delete_server(SERVER):
                report.problems.append(f"#{index} {attempt.call}: the spawn failed but the "
                                       f"server exists")
        if not cache_hit:
            bed.drop_cache()
        left = leftovers.leftovers(before, bed.capture())
        if left:
            report.problems.append(f"#{index} {attempt.call}: left {left}")
            before = bed.capture()  # report each leak once
        if stop_on_problem and report.problems:
            break
    report.seconds = time.monotonic() - started
    return report


def describe(report: SweepReport) -> str:
    lines = [report.summary()]
    lines += [f"  #{a.index:<3} {a.outcome:<8} {a.call}" for a in report.attempts]
    lines += ["PROBLEMS:"] + [f"  {p}" for p in report.problems] if report.problems else []
    return "\n".join(lines)
