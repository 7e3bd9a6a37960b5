"""Cluster mode: Dramatiq workers fetch a batch's chunks, PostgreSQL stores them, Redis Streams carry them live.

Nothing here is imported by the one-process default (SQLite, no Redis); see docs/deploy.md.
"""
