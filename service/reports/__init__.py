"""Audit reports and the small web UI, rendered on the server.

``content`` gathers what a report shows (rows, results, figures, how to reproduce it) into plain data that
both the HTML page and report.json use; ``sections`` turns each check's results into tables, ``figures``
reads the plots from the artifact store, ``reproduce`` writes the commands that rerun the audit, and
``render`` owns the Jinja2 environment (autoescaping on) and the security headers of every HTML response.
Nothing here imports torch: the plots were drawn by the worker and are only embedded.
"""
