"""Audit reports and the small web UI, rendered on the server.

``content`` gathers what a report shows (rows, results, figures, how to reproduce it) into plain data that
both the HTML page and report.json use; ``sections`` reads the section each check's engine module wrote
(stored by the worker with the results; ``legacy`` tabulates audits stored before that), ``figures`` reads
the plots from the artifact store, ``reproduce`` writes the commands that rerun the audit,
``result_rows`` reads the results into named rows at full precision (the CSV export), ``comparison`` puts
finished audits' rows side by side (GET /v1/audits/compare), and ``render`` owns the Jinja2 environment
(autoescaping on) and the security headers of every HTML response.
Nothing here imports torch: the plots were drawn by the worker and are only embedded.
"""
