"""A source expanded into URLs: a sitemap (urlset, or a sitemapindex nested at most MAX_DEPTH deep; plain or
gzipped) or the links on one page, read as the documents stream in and yielded as (url, meta) pairs.

XML goes through defusedxml's expat parser fed a piece at a time: a DTD (and with it every entity declaration and
external entity) is refused before anything expands, so a billion-laughs or external-entity sitemap costs nothing.
Pages go through html.parser fed a piece at a time. Every document is fetched by app/fetch/document.py: the SSRF
guard on every hop, bodies decoded in bounded pieces and cut at a byte cap. Memory holds the URLs found, never a
document.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin
from xml.etree.ElementTree import ParseError

import gevent
from defusedxml import DefusedXmlException, DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import DefusedXMLParser
from gevent.event import Event

from ..core.config import Config
from ..core.sources import Source
from . import guard
from .base import USER_AGENT
from .document import Document, DocumentError, DocumentLimits, DocumentReader
from .follow import origin

# The sitemaps protocol's limits on one file (sitemaps.org/protocol.html): 50,000 entries, 50 MB uncompressed.
SITEMAP_MAX_ENTRIES = 50_000
SITEMAP_MAX_BYTES = 50 * 1024 * 1024
MAX_DEPTH = 3  # levels of sitemap indexes: the one given (1) may name indexes (2) that name indexes (3) of urlsets
PAGE_MAX_BYTES = 10 * 1024 * 1024  # a page is read this far at most
# html.parser holds an unfinished tag whole and reads it again from its start at every feed (quadratic, and all on
# the hub): a tag, comment or declaration still open past this many characters ends the read.
PAGE_MAX_TAG = 64 * 1024
PAGE_FEED = 16 * 1024  # characters fed at once: a tag is parsed at most this far past PAGE_MAX_TAG
# expat parses a token (a tag with its attributes, a comment) only once it has all of it, then at once, on the hub:
# past this many bytes fed with no element or text reported, the sitemap is read no further.
SITEMAP_MAX_TOKEN = 1024 * 1024
MAX_LASTMOD = 64  # characters of a lastmod kept (a W3C datetime is at most 35)
SITEMAP_ACCEPT = "application/xml, text/xml;q=0.9, */*;q=0.1"
PAGE_ACCEPT = "text/html, application/xhtml+xml;q=0.9, */*;q=0.1"
CDATA_TAIL = 1024  # characters of a script's body kept while its end tag (</script >) may be arriving
# Elements whose attribute names a URL the page uses: links, stylesheets and the like, images, scripts.
LINK_ATTRIBUTES = {"a": "href", "link": "href", "img": "src", "script": "src"}

BUSY_RETRY_AFTER = 5  # seconds a refused reader is told to wait (Retry-After) when every read slot is taken

Meta = dict[str, str]
_ABSOLUTE = re.compile(r"https?://", re.IGNORECASE)
# The seen-set's key: a process's own, so no source can be written to make two of its URLs collide on purpose.
_SEEN_KEY = os.urandom(16)


class SourceError(DocumentError):
    """A source that cannot be expanded (a document refused or unreadable, a limit passed): a 400 naming why."""


class SourceBusy(SourceError):
    """Every source read slot of this process is taken (GREENBATCH_SOURCE_MAX_READS): a 503, to try again later."""

    def __init__(self, message: str):
        super().__init__(message, code="busy")
        self.retry_after = BUSY_RETRY_AFTER


class ReadSlots:
    """The sources being read at once in this process: each holds a connection pool, a parser and its seen-set."""

    def __init__(self) -> None:
        self.reading = 0
        self._freed = Event()

    @contextmanager
    def held(self, size: int, wait: float = 0.0) -> Iterator[None]:
        """Hold one of `size` slots while the block runs, waiting up to `wait` seconds for one; SourceBusy if none."""
        deadline = time.monotonic() + wait
        while self.reading >= size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SourceBusy(
                    f"{size} source{'s are' if size != 1 else ' is'} being read already, the most at once "
                    f"(GREENBATCH_SOURCE_MAX_READS); try again in {BUSY_RETRY_AFTER} s"
                )
            self._freed.clear()
            self._freed.wait(left)
        self.reading += 1
        try:
            yield
        finally:
            self.reading -= 1
            self._freed.set()


READ_SLOTS = ReadSlots()  # one per process: the bound is the server's, whoever reads (API, watch lists)


@dataclass
class SourceCounts:
    """What an expansion has seen so far."""

    sitemaps_read: int = 0
    pages_read: int = 0
    found: int = 0  # URL entries (a sitemap's <loc>s, a page's links), repeats included
    unique: int = 0  # distinct fetchable URLs among them
    excluded: int = 0  # unique URLs left out by include, exclude or same_origin
    invalid: int = 0  # entries that are not fetchable URLs (mailto:, javascript:, malformed)
    kept: int = 0  # URLs yielded: unique and not excluded

    def to_dict(self) -> dict[str, int]:
        """The counts as JSON."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class SourceLimits:
    """The server's bounds on expanding one source (GREENBATCH_SOURCE_* settings)."""

    max_sitemaps: int
    max_found: int
    timeout: float
    document: DocumentLimits
    max_reads: int = 2
    sitemap_max_bytes: int = SITEMAP_MAX_BYTES
    page_max_bytes: int = PAGE_MAX_BYTES

    @classmethod
    def from_config(cls, config: Config) -> SourceLimits:
        """The limits the settings give."""
        return cls(
            max_sitemaps=config.source_max_sitemaps,
            max_reads=config.source_max_reads,
            # Repeats and excluded URLs are read too, but not without end: always one whole sitemap, and beyond it
            # twice what a batch may hold.
            max_found=2 * config.max_urls + SITEMAP_MAX_ENTRIES,
            timeout=config.source_timeout,
            document=DocumentLimits(
                connect_timeout=config.default_connect_timeout,
                read_timeout=min(config.default_timeout, config.source_timeout),
                max_url_length=config.max_url_length,
                user_agent=config.user_agent or USER_AGENT,
            ),
        )


@dataclass
class Expansion:
    """One source being expanded: iterate for (url, meta) pairs, in document order, each URL once."""

    source: Source
    policy: guard.Policy
    limits: SourceLimits
    counts: SourceCounts = field(default_factory=SourceCounts)

    def __post_init__(self) -> None:
        self._filter = self.source.matcher()
        # 8-byte digests, not the URLs: max_found of them may be held, and a URL may be thousands of characters.
        self._seen: set[int] = set()
        # Why the source ended before its end: sitemaps left unread (GREENBATCH_SOURCE_MAX_SITEMAPS), or None.
        self.cut_short: SourceError | None = None

    def __iter__(self) -> Iterator[tuple[str, Meta]]:
        reader = DocumentReader(self.policy, self.limits.document)
        try:
            if self.source.type == "sitemap":
                yield from self._sitemap_urls(reader)
            else:
                yield from self._page_urls(reader)
        except SourceError:
            raise
        except DocumentError as exc:
            raise SourceError(str(exc), exc.code) from None
        finally:
            reader.close()

    # -- sitemaps ------------------------------------------------------------------------------

    def _sitemap_urls(self, reader: DocumentReader) -> Iterator[tuple[str, Meta]]:
        """Every sitemap's URLs, breadth first: an index's sitemaps are read once the index is, each sitemap once."""
        pending = deque([(self.source.url, 1)])
        known = {self.source.url}  # sitemaps read or queued, by the URL named and the URL read after redirects
        dropped = ""  # the last index that named a sitemap beyond GREENBATCH_SOURCE_MAX_SITEMAPS
        while pending:
            url, depth = pending.popleft()
            document = reader.open(url, "sitemap", SITEMAP_ACCEPT)
            known.add(document.url)
            self.counts.sitemaps_read += 1
            for kind, loc, lastmod in _sitemap_entries(document, self.limits.sitemap_max_bytes):
                if kind == "sitemap":
                    if depth > MAX_DEPTH:
                        raise SourceError(
                            f"the sitemap index {document.url} is nested {depth} levels deep; at most {MAX_DEPTH} "
                            "levels of sitemap indexes are read",
                            code="sitemap_too_deep",
                        )
                    child = self._checked(loc, document.url)
                    if child is None or child in known:
                        continue
                    # Read and queued together stay within the bound, so an index naming 50,000 sitemaps queues
                    # no more than max_sitemaps of them; the ones beyond are needed only if these fall short.
                    if self.counts.sitemaps_read + len(pending) >= self.limits.max_sitemaps:
                        dropped = document.url
                        continue
                    known.add(child)
                    pending.append((child, depth + 1))
                else:
                    yield from self._offer(loc, document.url, {"lastmod": lastmod} if lastmod else {})
        if dropped:
            # Asked for more URLs than the sitemaps read gave: those left unread might have held them.
            self.cut_short = SourceError(
                f"the sitemap index {dropped} names more sitemaps than are read for one source: at most "
                f"{self.limits.max_sitemaps} in all (GREENBATCH_SOURCE_MAX_SITEMAPS), and they gave "
                f"{self.counts.kept:,} URLs; start from one of its sitemaps"
                + (f", or set source.max_urls (at most {self.counts.kept})" if self.counts.kept else ""),
                code="too_many_sitemaps",
            )

    # -- pages ---------------------------------------------------------------------------------

    def _page_urls(self, reader: DocumentReader) -> Iterator[tuple[str, Meta]]:
        """The links on the page, in the order they appear."""
        document = reader.open(self.source.url, "page", PAGE_ACCEPT)
        self.counts.pages_read += 1
        home = origin(document.url)
        meta = {"found_on": document.url}
        parser = _LinkParser(document.url)
        decoder = codecs.getincrementaldecoder(_charset(document.content_type))(errors="replace")
        for piece in document.pieces(self.limits.page_max_bytes):
            text = decoder.decode(piece)
            for start in range(0, len(text), PAGE_FEED):
                parser.feed(text[start : start + PAGE_FEED])
                if parser.held() > PAGE_MAX_TAG:
                    raise SourceError(
                        f"the page {document.url} has a tag (or comment) longer than {PAGE_MAX_TAG // 1024} KiB; it"
                        " was read no further",
                        code="page_tag_too_large",
                    )
            links, parser.links = parser.links, []
            for link in links:
                yield from self._offer(link, parser.base, meta, home)
            gevent.sleep(0)  # each feed parses a bounded piece: the API and the pages are served between two
        parser.feed(decoder.decode(b"", final=True))
        parser.close()
        for link in parser.links:
            yield from self._offer(link, parser.base, meta, home)

    # -- each URL found ------------------------------------------------------------------------

    def _checked(self, raw: str, base: str) -> str | None:
        """An entry as the engine would fetch it (resolved, fragment dropped), or None when it cannot be fetched."""
        text = raw.strip()
        try:
            if not _ABSOLUTE.match(text):  # a sitemap's <loc> always is: urljoin would only cost its time
                text = urljoin(base, text)
            if "#" in text:
                text = urldefrag(text)[0]
            return guard.check_url(text, self.limits.document.max_url_length)
        except (guard.InvalidUrl, ValueError):
            self.counts.invalid += 1
            return None

    def _offer(
        self, raw: str, base: str, meta: Meta, home: tuple[str, str] | None = None
    ) -> Iterator[tuple[str, Meta]]:
        """Yield an entry when it is a fetchable URL not seen before that the filters keep; count it either way."""
        counts = self.counts
        counts.found += 1
        if counts.found > self.limits.max_found:
            raise SourceError(
                f"the source lists more than {self.limits.max_found:,} URLs (twice GREENBATCH_MAX_URLS, and 50,000 "
                "more); it was read no further",
                code="source_too_large",
            )
        url = self._checked(raw, base)
        if url is None:
            return
        key = _fingerprint(url)
        if key in self._seen:
            return
        self._seen.add(key)
        counts.unique += 1
        if not self._filter.keeps(url) or (home is not None and self.source.same_origin and origin(url) != home):
            counts.excluded += 1
            return
        counts.kept += 1
        yield url, meta


def _fingerprint(url: str) -> int:
    """A URL as the seen-set keeps it: 64 bits of a keyed BLAKE2b (two URLs of 2 million share one once in 10^7)."""
    digest = hashlib.blake2b(url.encode("utf-8", "surrogatepass"), digest_size=8, key=_SEEN_KEY).digest()
    return int.from_bytes(digest, "little")


def take(expansion: Expansion, read: int, keep: int, wait: float = 0.0) -> list[tuple[str, Meta]]:
    """The first `keep` URLs of a source and their meta, reading on until it ends or `read` URLs came (its counts
    then say how many), within GREENBATCH_SOURCE_TIMEOUT, holding a read slot (waiting up to `wait` seconds for
    one); SourceError naming why when it cannot be read, SourceBusy when no slot was free."""
    with READ_SLOTS.held(expansion.limits.max_reads, wait):
        return _take(expansion, read, keep)


def _take(expansion: Expansion, read: int, keep: int) -> list[tuple[str, Meta]]:
    """take() once a read slot is held."""
    limits = expansion.limits
    timeout = gevent.Timeout(
        limits.timeout,
        SourceError(
            f"reading the source {expansion.source.url} took longer than {limits.timeout:g} s "
            "(GREENBATCH_SOURCE_TIMEOUT); nothing was started",
            code="source_timeout",
        ),
    )
    found: list[tuple[str, Meta]] = []
    timeout.start()
    try:
        for pair in expansion:
            if len(found) < keep:
                found.append(pair)
            if expansion.counts.kept >= read:
                break
    finally:
        timeout.close()
    return found


def over_limit_message(source: Source, limit: int) -> str:
    """Why a source with more URLs than a batch may hold is refused, offering to take the first ones."""
    return (
        f"the {source.type.replace('_', ' ')} source {source.url} has more than {limit:,} URLs, the most in one "
        f"batch (GREENBATCH_MAX_URLS); set source.max_urls (at most {limit}) to take the first ones"
    )


def batch_urls(expansion: Expansion, max_urls: int, wait: float = 0.0) -> list[tuple[str, Meta]]:
    """The URLs (and meta) a batch takes from a source: its first source.max_urls, or all of them when they are at
    most `max_urls`; SourceError when it cannot be read, holds more without source.max_urls, or gives none
    (SourceBusy when no read slot came free within `wait` seconds). A batch submitted with a source and each run of
    a watch list holding one read it through here."""
    source = expansion.source
    cap = source.max_urls or max_urls
    wanted = cap if source.max_urls else cap + 1  # one more tells a source over the limit
    found = take(expansion, wanted, wanted, wait)
    if expansion.cut_short is not None:
        raise expansion.cut_short
    if len(found) > cap:
        if source.max_urls is None:
            raise SourceError(over_limit_message(source, max_urls), code="too_many_urls")
        del found[cap:]
    if not found:
        counts = expansion.counts
        raise SourceError(
            f"the source {source.url} gave no URLs to fetch: {counts.found} found, {counts.excluded} excluded by"
            f" include, exclude or same_origin, {counts.invalid} not fetchable",
            code="empty_source",
        )
    return found


# -- the sitemap parser --------------------------------------------------------------------------


class _SitemapTarget:
    """ElementTree parser target that keeps only each entry's <loc> and <lastmod>, never a tree."""

    def __init__(self, url: str):
        self.url = url
        self.entries: list[tuple[str, str, str | None]] = []  # (url or sitemap, loc, lastmod), taken as they come
        self.count = 0
        self.events = 0  # elements opened or closed and texts reported: the parser's progress
        self._depth = 0
        self._entry = ""  # "url" or "sitemap": the element an entry is, by the root's kind
        self._in_entry = False
        self._field: str | None = None
        self._text: list[str] = []
        self._length = 0
        self._loc: str | None = None
        self._lastmod: str | None = None

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        """An element opens."""
        self.events += 1
        self._depth += 1
        name = tag.rpartition("}")[2]
        if self._depth == 1:
            if name not in ("urlset", "sitemapindex"):
                raise SourceError(
                    f"{self.url} is not a sitemap: its root element is <{name[:40]}>, not <urlset> or <sitemapindex>",
                    code="not_a_sitemap",
                )
            self._entry = "url" if name == "urlset" else "sitemap"
        elif self._depth == 2 and name == self._entry:
            self._in_entry, self._loc, self._lastmod = True, None, None
        elif self._depth == 3 and self._in_entry and name in ("loc", "lastmod"):
            self._field, self._text, self._length = name, [], 0

    def data(self, text: str) -> None:
        """Text inside an element: kept only inside <loc> or <lastmod>, and only as long as a URL may be."""
        self.events += 1
        if self._field is not None:
            self._length += len(text)
            if self._length <= 65536:
                self._text.append(text)

    def end(self, tag: str) -> None:
        """An element closes."""
        self.events += 1
        if self._depth == 3 and self._field is not None:
            value = "".join(self._text).strip()
            if self._field == "loc":
                self._loc = value
            else:
                self._lastmod = value[:MAX_LASTMOD] or None
            self._field = None
        elif self._depth == 2 and self._in_entry:
            self._in_entry = False
            if self._loc:
                self.count += 1
                if self.count > SITEMAP_MAX_ENTRIES:
                    raise SourceError(
                        f"the sitemap {self.url} lists more than {SITEMAP_MAX_ENTRIES:,} "
                        f"{'URLs' if self._entry == 'url' else 'sitemaps'}, the sitemaps protocol's limit for one"
                        " file; split it into several sitemaps under a sitemap index",
                        code="sitemap_too_large",
                    )
                self.entries.append((self._entry, self._loc, self._lastmod))
        self._depth -= 1

    def close(self) -> None:
        """The document ended."""


def _sitemap_entries(document: Document, max_bytes: int) -> Iterator[tuple[str, str, str | None]]:
    """(kind, loc, lastmod) of each entry of a sitemap as its bytes arrive; SourceError naming what is wrong."""
    target = _SitemapTarget(document.url)
    parser = DefusedXMLParser(target=target, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    # No attribute is read: expat's list of them goes unused rather than made into a dict, name by name, in Python.
    parser.parser.StartElementHandler = lambda tag, attributes: target.start(tag, {})
    events = 0
    quiet = 0  # bytes fed since the parser last reported an element or a text
    try:
        try:
            for piece in document.pieces(max_bytes):
                parser.feed(piece)
                if target.events != events:
                    events, quiet = target.events, 0
                else:
                    quiet += len(piece)
                    if quiet > SITEMAP_MAX_TOKEN:
                        raise SourceError(
                            f"the sitemap {document.url} has a tag (or comment) longer than "
                            f"{SITEMAP_MAX_TOKEN // (1024 * 1024)} MiB; it was read no further",
                            code="sitemap_token_too_large",
                        )
                if target.entries:
                    yield from target.entries
                    target.entries.clear()
            parser.close()
        except DocumentError as exc:
            if exc.code == "source_too_large":
                raise SourceError(
                    f"{exc}: the sitemaps protocol allows {SITEMAP_MAX_BYTES:,} bytes (50 MB) uncompressed per file",
                    code="sitemap_too_large",
                ) from None
            raise
    except (DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden) as exc:
        raise SourceError(_forbidden(document.url, exc), code="xml_forbidden") from None
    except DefusedXmlException as exc:
        raise SourceError(f"the sitemap {document.url} was refused: {exc}", code="xml_forbidden") from None
    except ParseError as exc:
        raise SourceError(f"the sitemap {document.url} is not well-formed XML: {exc}", code="not_a_sitemap") from None
    yield from target.entries


def _forbidden(url: str, exc: DefusedXmlException) -> str:
    """Why an XML document with a DTD, an entity or an external reference is refused."""
    return (
        f"the sitemap {url} has a document type declaration (<!DOCTYPE>), refused: its entities can expand without "
        "bound (an XML bomb such as billion laughs) or read external files and URLs (external entities), and "
        f"sitemaps need none ({type(exc).__name__})"
    )


# -- the page parser -----------------------------------------------------------------------------


class _LinkParser(HTMLParser):
    """Collects the URLs of a[href], link[href], img[src] and script[src]; the first <base href> sets the base."""

    def __init__(self, url: str):
        super().__init__(convert_charrefs=True)
        self.base = url
        self._page = url
        self._based = False
        self.links: list[str] = []

    def feed(self, data: str) -> None:
        """Parse more of the page; text without a `>` after an unfinished tag is only kept, not parsed again."""
        if self.rawdata.startswith("<") and ">" not in data:
            # Every tag, comment and declaration ends with `>`: without one, html.parser would only scan the held
            # tag from its start once more, in time and (its regex's backtracking) memory growing with its length.
            self.rawdata += data
        else:
            super().feed(data)

    def held(self) -> int:
        """Characters fed but not parsed yet: an unfinished tag, comment or declaration (a script's body is dropped)."""
        if self.cdata_elem is not None:
            # Inside <script> or <style> only the end tag matters, and a page's inline script may be megabytes:
            # keep just what could be the start of that tag.
            start = self.rawdata.rfind("<", len(self.rawdata) - CDATA_TAIL)
            self.rawdata = self.rawdata[start:] if start >= 0 else ""
        return len(self.rawdata)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """A start tag (or a self-closing one)."""
        if tag == "base" and not self._based:
            href = dict(attrs).get("href")
            if href:
                self._based = True  # browsers use the first <base href> only
                self.base = urljoin(self._page, href.strip())
            return
        wanted = LINK_ATTRIBUTES.get(tag)
        if wanted is None:
            return
        for name, value in attrs:
            if name == wanted and value and value.strip():
                self.links.append(value)
                break


def _charset(content_type: str) -> str:
    """The charset a Content-Type names, when Python knows it; UTF-8 otherwise."""
    for part in content_type.split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset":
            name = value.strip().strip("\"'")
            try:
                return codecs.lookup(name).name
            except LookupError:
                break
    return "utf-8"
