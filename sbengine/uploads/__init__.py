"""Reading a user's own files safely: checkpoints checked against an architecture, dataset arrays against
declared feature blocks, the file's framing (safetensors header, zip directory) before either.

``python -m sbengine.uploads`` is the upload validator program: the API starts it once per upload in a
resource-limited process (service/uploads/validator.py) and reads its one-line JSON answer; check.py holds
the checks, formats.py the framing parsers (pure Python, no torch).
"""
