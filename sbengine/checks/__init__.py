"""The audit checks, by name: ``CHECKS`` is the registry ``sbengine.audit.run_audit`` looks checks up in.

One module per check (``sbengine.checks.<name>``) holds everything about it: its options with their
defaults, how it runs, its figures and its report section (``sbengine.checks.base`` defines the interface).
Adding a check is that module, its entry below, its options model in service/schemas/audits.py (the API
validates requests without importing the engine) and its tests; the audit loop, the worker, the report
and the CLI read the registry or the sections the worker stored, and need no change.

The order of ``CHECKS`` is the order checks are listed in (error messages, docs); an audit runs them in the
order requested.
"""

from __future__ import annotations

from sbengine.checks import ensemble, feature_dependence, generalization, pgd, randomization, uap
from sbengine.checks.base import Check, CheckContext

CHECKS: dict[str, Check] = {}


def register(check: Check) -> Check:
    """Add ``check`` to the registry (a name already taken is an error: one check per name)."""
    if check.name in CHECKS:
        raise ValueError(f"an audit check named {check.name!r} is already registered")
    CHECKS[check.name] = check
    return check


for _module in (randomization, feature_dependence, generalization, pgd, uap, ensemble):
    register(_module.CHECK)

__all__ = ["CHECKS", "Check", "CheckContext", "register"]
