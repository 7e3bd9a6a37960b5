"""Notifications when a batch ends: the guard's check of each target, and (below) their delivery; no Flask here."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..fetch import guard


def target_refusal(url: str, policy: guard.Policy, max_length: int) -> tuple[str | None, str | None]:
    """(the URL as the guard checked it, None), or (None, why the guard refuses to send to it).

    A notify target is a fetch the user controls: its host is resolved and every address judged like a batch's
    URLs, so a webhook to a metadata or private address is refused when saved, not only when sent.
    """
    try:
        checked = guard.check_url(url, max_length)
    except guard.InvalidUrl as exc:
        return None, str(exc)
    parts = urlsplit(checked)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        guard.resolve(host, port, policy)
    except guard.GuardError as exc:
        return None, str(exc)
    except (OSError, UnicodeError) as exc:
        return None, f"{host} could not be resolved ({exc}); check the name"
    return checked, None
