"""Uploads: a user's own checkpoint (POST /v1/models/uploads) or evaluation data (POST /v1/datasets/uploads).

An upload is data, never code. The API streams the multipart body to a file under the data dir with a
running byte count and hash (``stream``) and parses nothing of it; it hands the file to a separate,
resource-limited validator process (``validator`` starts the program the server was wired with:
sbengine/uploads/check.py) that checks the framing (safetensors header, zip directories, declared sizes),
reads the tensors or arrays and checks them against the declared architecture or blocks. Only what that
process wrote back in canonical form (safetensors weights, the Dataset arrays) enters the artifact store;
everything else is removed when the request ends.
"""
