"""Uploads: a user's own checkpoint (POST /v1/models/uploads) or evaluation data (POST /v1/datasets/uploads).

An upload is data, never code. The API streams the multipart body to a file under the data dir with a
running byte count and hash (``stream``), checks the file's framing in pure Python (``formats``: the
safetensors header, zip directories, declared sizes), then hands it to a separate, resource-limited process
(``validator`` runs ``worker/upload_check.py``) that reads the tensors or arrays and checks them against the
declared architecture or blocks. Only what that process wrote back in canonical form (safetensors weights,
the Dataset arrays) enters the artifact store; everything else is removed when the request ends.
"""
