"""Progress bars for long transfers (tqdm), shown only on a terminal."""
from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO

from tqdm import tqdm


def enabled(stream: IO[str] | None = None, quiet: bool = False) -> bool:
    stream = stream or sys.stderr
    return not quiet and hasattr(stream, "isatty") and stream.isatty()


@contextmanager
def bar(description: str, total: int | None = None, unit: str = "B",
        stream: IO[str] | None = None, quiet: bool = False) -> Iterator[tqdm]:
    """A progress bar; ``bar.update(n)`` advances it. A no-op off a terminal."""
    stream = stream or sys.stderr
    with tqdm(total=total, desc=description, unit=unit, unit_scale=unit == "B",
              unit_divisor=1024, file=stream, disable=not enabled(stream, quiet),
              leave=True, dynamic_ncols=True) as progress:
        yield progress


def track(chunks: Iterable[bytes], description: str, total: int | None = None,
          stream: IO[str] | None = None, quiet: bool = False) -> Iterator[bytes]:
    """Pass byte chunks through, advancing a progress bar by their size."""
    with bar(description, total, stream=stream, quiet=quiet) as progress:
        for chunk in chunks:
            progress.update(len(chunk))
            yield chunk


def steps(description: str, total: int, stream: IO[str] | None = None, quiet: bool = False):
    """A callback ``(step, fraction)`` for :class:`xhost.context.Context`
    that drives a step progress bar (0..total)."""
    progress = tqdm(total=total, desc=description, unit="step", file=stream or sys.stderr,
                    disable=not enabled(stream, quiet), leave=True,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
    done = [0.0]

    def callback(step: str, fraction: float) -> None:
        target = round(fraction * total, 3)
        progress.set_postfix_str(step)
        if target > done[0]:
            progress.update(target - done[0])
            done[0] = target
        if fraction >= 1.0:
            progress.close()

    return callback
