"""A batch's source: where its URLs come from when it has no list (a sitemap, or the links on a page), as a client
sends it and as the batch stores it. Fetching and reading one is app/fetch/sources.py's work."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import re2

from .config import Config
from .options import ValidationError

SOURCE_TYPES = ("sitemap", "page_links")
MAX_PATTERN = 1000  # characters of an include or exclude expression; stored with the batch
# RE2 matches in time linear in the URL's length whatever the expression (Python's re can take exponential
# time on patterns such as (a+)+$): a client's expression must not hold the server's one event loop.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad expression is the client's 400, not a line on the server's stderr
_RE2_OPTIONS.max_mem = 1 << 20  # an expression whose program needs more than 1 MiB is refused


@dataclass(frozen=True)
class Source:
    """Where a batch's URLs come from: a sitemap (nested indexes followed) or one page's links."""

    type: str
    url: str
    include: str | None = None
    exclude: str | None = None
    max_urls: int | None = None  # take the first N URLs; without it, more than GREENBATCH_MAX_URLS is refused
    same_origin: bool = True  # page_links: only links on the page's own scheme, host and port

    def to_dict(self) -> dict[str, Any]:
        """The source as stored with its batch and shown in its JSON (same_origin only for page_links)."""
        shown = asdict(self)
        if self.type != "page_links":
            del shown["same_origin"]
        return shown

    def default_name(self) -> str:
        """The name of a batch (or watch list) of this source's URLs when the client gives none."""
        return f"{'sitemap' if self.type == 'sitemap' else 'links on'} {self.url}"

    def matcher(self) -> URLFilter:
        """The include and exclude expressions, compiled."""
        return URLFilter(self.include, self.exclude)

    @classmethod
    def parse(cls, raw: Any, config: Config) -> Source:
        """Validate a client's source against the server's limits; unknown keys are errors. The URL is checked
        by the caller (guard.check_url), which knows the fetch policy."""
        if not isinstance(raw, dict):
            raise ValidationError("source must be an object", [{"field": "source", "message": "must be an object"}])
        problems: list[dict[str, Any]] = []
        kind = raw.get("type")
        if kind not in SOURCE_TYPES:
            problems.append({"field": "source.type", "message": f"must be one of {', '.join(SOURCE_TYPES)}"})
        known = {"type", "url", "include", "exclude", "max_urls"} | ({"same_origin"} if kind == "page_links" else set())
        for key in sorted(set(raw) - known):
            problems.append(
                {
                    "field": f"source.{key}",
                    "message": f"is not a field of {'a ' + kind if kind in SOURCE_TYPES else 'a'} source",
                }
            )
        url = raw.get("url")
        if not isinstance(url, str) or not url.strip():
            problems.append({"field": "source.url", "message": "must be a URL (a string)"})
        for key in ("include", "exclude"):
            problem = pattern_problem(raw.get(key))
            if problem:
                problems.append({"field": f"source.{key}", "message": problem})
        max_urls = raw.get("max_urls")
        if max_urls is not None and (
            isinstance(max_urls, bool) or not isinstance(max_urls, int) or not 1 <= max_urls <= config.max_urls
        ):
            problems.append(
                {
                    "field": "source.max_urls",
                    "message": f"must be an integer from 1 to {config.max_urls} (server limit)",
                }
            )
        same_origin = raw.get("same_origin", True)
        if not isinstance(same_origin, bool):
            problems.append({"field": "source.same_origin", "message": "must be true or false"})
        if problems:
            first = problems[0]
            raise ValidationError(f"invalid source: {first['field']} {first['message']}", problems)
        return cls(
            type=str(kind),
            url=str(url).strip(),
            include=raw.get("include") or None,
            exclude=raw.get("exclude") or None,
            max_urls=max_urls,
            same_origin=same_origin,
        )


def pattern_problem(value: Any) -> str | None:
    """What is wrong with an include or exclude expression, or None when it compiles (absent is fine)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        return "must be a regular expression (a string)"
    if len(value) > MAX_PATTERN:
        return f"must be at most {MAX_PATTERN} characters"
    try:
        re2.compile(value, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        return f"is not a regular expression RE2 accepts ({reason}); lookarounds and backreferences are not supported"
    return None


class URLFilter:
    """A source's include and exclude expressions: a URL is kept when include finds a match in it (or there is no
    include) and exclude does not."""

    def __init__(self, include: str | None, exclude: str | None):
        self._include = re2.compile(include, _RE2_OPTIONS) if include else None
        self._exclude = re2.compile(exclude, _RE2_OPTIONS) if exclude else None

    def keeps(self, url: str) -> bool:
        """Whether a URL passes the filters."""
        if self._include is not None and self._include.search(url) is None:
            return False
        return self._exclude is None or self._exclude.search(url) is None
