"""What every response carries for the browser's safety: a Content-Security-Policy without inline script or
style, no sniffing, no framing, same-origin referrers; and API and login answers are never stored by caches.
"""

from __future__ import annotations

from flask import Response, request

# No inline script or style anywhere. connect-src 'self' already covers ws:// and wss:// to this
# host (CSP Level 3, checked with Chromium in tests/test_auth.py), so no blanket ws: wss: sources.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
# same-origin, not no-referrer: under no-referrer browsers send `Origin: null` on our own POSTs,
# which the Origin check would then refuse.
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def add_security_headers(response: Response) -> Response:
    """The headers every response carries; API and login answers are never stored by caches."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/api/") or request.blueprint == "auth":  # "auth": the login and logout pages
        response.headers["Cache-Control"] = "no-store"
    return response
