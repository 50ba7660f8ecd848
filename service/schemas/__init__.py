"""Pydantic v2 request (``XCreate``) and response (``XRead``) schemas of the public API."""
