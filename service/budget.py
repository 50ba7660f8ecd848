"""Job budgets: the peak memory and the work a job is estimated to need, checked before it is queued.

service/limits.py bounds one field at a time; the cost of a job is their product (rows x features at
generation, width x depth x members at training, steps x restarts x rows x members in an audit). An
``Estimate`` adds up named contributions (``Part``), each with the request fields that drive it;
service/estimates.py builds one per job kind from the request and what is stored about its inputs. Over
``SBAUDIT_MAX_JOB_MEMORY_BYTES`` or ``SBAUDIT_MAX_JOB_WORK`` the request is a 422 naming the fields behind
the largest parts, with the estimate and the limit; otherwise the estimate is stored on the job
(``GET /v1/jobs/{id}`` shows it).

Memory is bytes at the job process's peak, including the process itself (interpreter, torch). Work is
multiply-adds (an elementary operation of data generation counts as one). Both are upper estimates of what
the engine does today, not measurements; docs/operations.md ("Job budgets") gives the formulas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.errors import Problem
from service.settings import Settings

# A job process before it touches data: the interpreter with torch, numpy and the worker imported (about
# 750 MiB resident, measured), rounded up.
RUNTIME_BYTES = 1 << 30
# A part this share of the total or more names its fields in the 422.
DRIVER_SHARE = 0.1


@dataclass(frozen=True)
class Part:
    """One named contribution (bytes or multiply-adds) and the request fields it grows with."""

    name: str
    amount: int
    fields: tuple[str, ...] = ()


@dataclass
class Estimate:
    """A job's estimated peak memory and work. ``job`` says what is estimated ("this dataset"), ``shape``
    the sizes behind it in words ("3000000 rows x 4096 features, float32")."""

    job: str
    shape: str
    memory: list[Part] = field(default_factory=list)
    work: list[Part] = field(default_factory=list)

    @property
    def memory_bytes(self) -> int:
        return sum(p.amount for p in self.memory)

    @property
    def work_total(self) -> int:
        return sum(p.amount for p in self.work)

    def as_json(self) -> dict[str, Any]:
        """What the job row stores and ``GET /v1/jobs/{id}`` shows."""
        return {
            "memory_bytes": self.memory_bytes,
            "work": self.work_total,
            "parts": {
                "memory_bytes": {p.name: p.amount for p in self.memory},
                "work": {p.name: p.amount for p in self.work},
            },
        }


def drivers(parts: list[Part]) -> list[str]:
    """The fields behind the parts that make up at least DRIVER_SHARE of the total, largest part first."""
    total = sum(p.amount for p in parts)
    out: list[str] = []
    for part in sorted(parts, key=lambda p: -p.amount):
        if part.amount < DRIVER_SHARE * total and out:
            break
        out.extend(f for f in part.fields if f not in out)
    return out


def gib(n: int | float) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


def enforce(estimate: Estimate, settings: Settings) -> dict[str, Any]:
    """The estimate as the job stores it, or a 422 if it is over either of the server's budgets."""
    memory, work = estimate.memory_bytes, estimate.work_total
    if memory > settings.max_job_memory_bytes:
        _refuse(
            estimate,
            estimate.memory,
            f"{estimate.job} needs about {gib(memory)} at peak ({estimate.shape}), over this server's "
            f"limit of {gib(settings.max_job_memory_bytes)} (SBAUDIT_MAX_JOB_MEMORY_BYTES)",
            limit={"memory_bytes": settings.max_job_memory_bytes},
        )
    if work > settings.max_job_work:
        _refuse(
            estimate,
            estimate.work,
            f"{estimate.job} needs about {work:.3g} multiply-adds ({estimate.shape}), over this "
            f"server's limit of {settings.max_job_work:.3g} (SBAUDIT_MAX_JOB_WORK)",
            limit={"work": settings.max_job_work},
        )
    return estimate.as_json()


def _refuse(estimate: Estimate, parts: list[Part], message: str, *, limit: dict[str, int]) -> None:
    fields = drivers(parts) or ["body"]
    raise Problem(
        422,
        f"{', '.join(fields)}: {message}",
        slug="over-budget",
        title="Over this server's job budget",
        errors=[{"field": f, "message": message} for f in fields],
        estimate=estimate.as_json(),
        limit=limit,
    )
