"""Progress reporting from long engine calls.

Engine functions take ``progress: ProgressCallback | None``. The worker turns events into job progress, the
CLI into a bar. A callback that raises stops the computation at that point and the exception propagates:
that is how a running job is canceled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Progress:
    stage: str
    step: int
    total: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, max(0.0, self.step / self.total))


ProgressCallback = Callable[[Progress], None]


def report(
    callback: ProgressCallback | None, stage: str, step: int, total: int | None = None, **metrics: Any
) -> None:
    if callback is not None:
        callback(Progress(stage=stage, step=step, total=total, metrics=metrics))
