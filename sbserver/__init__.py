"""Starts and operates the server: ``sbaudit serve``, ``worker``, ``migrate``, ``keys``, ``gc``.

The composition root: the only package that wires ``service`` (the API) to ``worker``'s executors and to
the upload validator program. Nothing else imports it.
"""
