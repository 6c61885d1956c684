"""Burrow's shared core: settings, broker and database links, readiness, dev stack."""
