"""A job process's hard memory limit, and how a job that reaches it ends.

The limit is ``RLIMIT_DATA``: the kernel refuses any allocation (``brk``, private writable ``mmap``) that
would take the process's data segment past it, so a job allocating as fast as it can stops at the limit, not
after it; numpy then raises ``MemoryError``, torch a ``RuntimeError`` ("can't allocate memory"), and the
runner ends the job failed with :func:`error`, not retried. Measured here (torch 2.14, CPU): a job process
holds about 0.8 GiB of data after importing torch and 1.1 GiB with 16 threads, which the allowance
(SBAUDIT_JOB_MEMORY_ALLOWANCE_BYTES) covers. The alternatives fall short:

- ``RLIMIT_AS`` counts address space torch only reserves (3.2 GiB right after ``import torch`` on a CPU
  machine, tens of GiB more once CUDA maps its unified address space), so no useful value of it works;
- a cgroup v2 ``memory.max`` needs a writable cgroup tree, which a job in the Docker image (uid 10001) or on
  a cgroup v1 host does not have;
- a thread polling resident memory needs the GIL, which a single numpy call that allocates gigabytes holds
  for the whole allocation, and between polls the process grows at gigabytes per second.

The limit covers memory the job process owns; should the machine still run short (more workers than its
memory allows), a job process is also the first thing the kernel's OOM killer picks, not the API or
PostgreSQL.
"""

from __future__ import annotations

import contextlib
import errno
import resource
from pathlib import Path

# The most a process may raise its own OOM score without privileges, and the most likely to be killed.
OOM_SCORE_ADJ = 1000

# How torch's CPU allocator words a refused allocation (a RuntimeError, not a MemoryError).
_TORCH_ALLOCATION_FAILED = ("can't allocate memory", "Cannot allocate memory", "not enough memory")


def apply(limit_bytes: int) -> None:
    """Limit this process (a job process that ends with its job: a limit cannot be raised again)."""
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = limit_bytes if hard == resource.RLIM_INFINITY else min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    with contextlib.suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text(str(OOM_SCORE_ADJ))


def error(limit_bytes: int) -> str:
    gib = f"{limit_bytes / (1 << 30):.2f}".rstrip("0").rstrip(".")
    return f"exceeded the memory limit of {gib} GiB"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation the limit refused, however the library that asked words it."""
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc) for text in _TORCH_ALLOCATION_FAILED)
