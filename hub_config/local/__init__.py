"""The local platform: every component of mlplatform on one machine (see platform.py)."""
