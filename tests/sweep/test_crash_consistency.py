"""Crash consistency (issue 6, item 6): a real ``xhost server create`` (or
``server delete``) process, talking to the simulator over HTTP, is killed
with SIGKILL at a random moment; the next xhost run -- ``xhost reconcile``,
or any command (every start reconciles) -- finishes the cleanup, and
nothing is left but a server that was complete, or nothing at all.

Most kills land after the operation's journal entry appears (the
operation has begun), at a moment drawn from the measured duration of an
undisturbed operation; one create in five is killed anywhere, start-up
included.
``XHOST_CRASH_SEED`` replays a run (the seed is in every failure message),
``XHOST_CRASH_KILLS`` sets how many kills each test makes.
"""
from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
from sweepbed import BACKENDS, shape

from xhost.testing import leftovers

XHOST = shutil.which("xhost") or str(pathlib.Path(sys.executable).parent / "xhost")
KILLS = int(os.environ.get("XHOST_CRASH_KILLS", "10"))


class Runner:
    def __init__(self, bed) -> None:
        self.bed = bed
        self.conf = bed.conf_file()

    def argv(self, *args: str) -> list[str]:
        return [XHOST, "--config-file", str(self.conf), *args]

    def run(self, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"xhost {' '.join(args)}: {proc.stdout}{proc.stderr}"
        return proc

    def create_args(self, name: str) -> list[str]:
        return ["server", "create", name, "--image", self.bed.image.id, "--flavor",
                self.bed.flavor, "--network", self.bed.network]

    def timed(self, *args: str) -> float:
        started = time.monotonic()
        self.run(*args)
        return time.monotonic() - started

    def killed(self, args: list[str], delay: float,
               journalled: bool) -> tuple[int | None, float]:
        """Start ``xhost args`` and SIGKILL it ``delay`` s later -- counted
        from its journal entry's appearance if ``journalled`` (the operation
        has begun) -- unless it ends first; its return code (None: killed)
        and how long it ran."""
        started = time.monotonic()
        proc = subprocess.Popen(self.argv(*args), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            if journalled:
                journal = self.bed.compute.journal
                while proc.poll() is None and not list(journal.entries()):
                    time.sleep(0.002)
            proc.wait(timeout=delay)
            return proc.returncode, time.monotonic() - started
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return None, time.monotonic() - started

    def servers(self) -> dict[str, dict]:
        out = self.run("server", "list", "-f", "json").stdout
        return {s["name"]: s for s in json.loads(out)}


def _seed() -> int:
    return int(os.environ.get("XHOST_CRASH_SEED") or random.SystemRandom().randrange(2**32))


def _work_time(xhost: Runner, duration: float) -> float:
    """How long an operation runs once begun: its command's duration less
    that of a command that only starts, connects and reads."""
    return max(duration - xhost.timed("server", "list"), 0.2)


def _journal_steps(bed) -> list[str]:
    return [f"{e['op']}: {[u['description'] for u in e.get('undo', [])]}"
            for e in bed.compute.journal.entries()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_killed_create_is_finished_by_the_next_run(make_bed, backend):
    bed = make_bed("direct_vhd", backend)
    seed = _seed()
    rng = random.Random(seed)
    xhost = Runner(bed)
    # One undisturbed create and delete: the duration kills are drawn from,
    # and what a complete server looks like.
    duration = xhost.timed(*xhost.create_args("whole"))
    expected = shape(bed.compute.show_server("whole"))
    xhost.run("server", "delete", "whole")
    work = _work_time(xhost, duration)
    before = bed.capture()
    outcomes = []
    for kill in range(KILLS):
        name = f"crash-{kill}"
        if rng.random() < 0.5:
            bed.drop_cache()  # the kill may land in the image download
        journalled = kill % 5 != 4  # one kill in five anywhere, even at start-up
        delay = rng.uniform(0.0, (work if journalled else duration) * 1.1)
        code, ran = xhost.killed(xhost.create_args(name), delay, journalled)
        where = _journal_steps(bed)
        # Half the time `xhost reconcile`, else whatever command comes next.
        if kill % 2:
            xhost.run("reconcile")
        listed = xhost.servers()
        context = (f"seed {seed}, kill #{kill} after {ran:.2f}s of {duration:.2f}s, exit "
                   f"{code}, journal at the kill: {where}")
        if name in listed:
            server = bed.compute.show_server(name)
            assert shape(server) == expected, f"a half-made server survived ({context})"
            xhost.run("server", "delete", name)
        left = leftovers.leftovers(before, bed.capture())
        assert not left, f"{context}: left {left}"
        outcomes.append("complete" if name in listed else "cleaned" if where else "early")
    print(f"seed {seed}: {outcomes}")
    assert "cleaned" in outcomes, f"no kill landed mid-spawn (seed {seed}): {outcomes}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_killed_delete_is_finished_by_the_next_run(make_bed, backend):
    bed = make_bed("direct_vhd", backend)
    seed = _seed()
    rng = random.Random(seed)
    xhost = Runner(bed)
    xhost.run(*xhost.create_args("whole"))
    duration = xhost.timed("server", "delete", "whole")
    work = _work_time(xhost, duration)
    before = bed.capture()  # after a first use has brought up the host's bridges
    outcomes = []
    for kill in range(max(KILLS // 2, 1)):
        name = f"doomed-{kill}"
        xhost.run(*xhost.create_args(name))
        code, ran = xhost.killed(["server", "delete", name], rng.uniform(0.0, work * 1.1),
                                 journalled=True)
        where = _journal_steps(bed)
        xhost.run("reconcile")
        context = (f"seed {seed}, kill #{kill} after {ran:.2f}s of {duration:.2f}s, exit "
                   f"{code}, journal at the kill: {where}")
        listed = xhost.servers()
        if name in listed:  # killed before the delete began: it is whole, delete it again
            assert not where, f"a deletion began but the server survived ({context})"
            xhost.run("server", "delete", name)
        left = leftovers.leftovers(before, bed.capture())
        assert not left, f"{context}: left {left}"
        outcomes.append("untouched" if name in listed else "finished" if where else "done")
    print(f"seed {seed}: {outcomes}")
