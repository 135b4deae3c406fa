"""Annotating scans by clicking: a session of masks made with SAM's prompts (``session``)."""
