"""Authentication and browser safety: tokens, the login cookie, CSRF and Origin checks, the websocket gate,
security headers, and the warning an exposed server prints. Against the real server unless a rule is pure."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest
import requests
import websocket
from flask import Flask

from app.core.config import Config, ConfigError
from app.serve import logs
from app.web import auth
from tests.support.server import ROOT, GreenbatchServer, error_of

TOKEN = "tok-" + "a1b2c3d4" * 4
OTHER_TOKEN = "tok-" + "e5f6a7b8" * 4
FILE_TOKEN = "file-" + "0f1e2d3c" * 4
CSRF = {"X-Requested-With": "greenbatch"}
EVIL = "https://evil.example"


# -- helpers ---------------------------------------------------------------------------------


def browser_session() -> requests.Session:
    """A client with its own cookie jar, as a browser has."""
    session = requests.Session()
    session.trust_env = False
    return session


def form_token(html: str) -> str:
    """The hidden csrf_token of a form."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


def log_in(
    server: GreenbatchServer, token: str = TOKEN, next_path: str = "/"
) -> tuple[requests.Session, requests.Response]:
    """Sign in through the login form; returns the browser-like session and the POST's answer."""
    session = browser_session()
    page = session.get(server.url("/login"), timeout=10)
    assert page.status_code == 200, page.text[:300]
    answer = session.post(
        server.url("/login"),
        data={"csrf_token": form_token(page.text), "token": token, "next": next_path},
        allow_redirects=False,
        timeout=10,
    )
    return session, answer


def bearer(token: str = TOKEN) -> dict[str, str]:
    """The Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}


def batch_body(target) -> dict:
    """A one-URL batch the server may fetch."""
    return {"urls": [target.url("/ok")]}


def websocket_handshake(server: GreenbatchServer, path: str, headers: dict[str, str]) -> tuple[int, str]:
    """Ask for a websocket on a raw socket; (status, body) of the answer, without going past the 101."""
    status, _, body = websocket_answer(server, path, headers)
    return status, body


def websocket_answer(server: GreenbatchServer, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    """Ask for a websocket on a raw socket; (status, headers with lower-case names, body), without going past the 101."""
    parts = urlsplit(server.base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {parts.netloc}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        while length and len(body) < int(length.group(1)):
            chunk = sock.recv(4096)
            if not chunk:
                break
            body += chunk
    fields = dict(line.decode("latin-1").split(":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
    return (
        status,
        {name.strip().lower(): value.strip() for name, value in fields.items()},
        body.decode("utf-8", "replace"),
    )


def with_cookie(server: GreenbatchServer, path: str, cookie: str, **headers: str) -> requests.Response:
    """A GET sending only this session cookie, from a fresh client (as whoever copied the cookie would)."""
    return browser_session().get(
        server.url(path),
        headers={"Cookie": f"greenbatch_session={cookie}", **headers},
        allow_redirects=False,
        timeout=10,
    )


def get_from(server: GreenbatchServer, source: str, path: str, headers: dict[str, str]) -> int:
    """The status of a GET sent from the local address `source` (127.0.0.2 plays a proxy on its own address)."""
    parts = urlsplit(server.base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10, source_address=(source, 0))
    try:
        connection.request("GET", path, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def assert_security_headers(response: requests.Response) -> None:
    """The headers every response must carry."""
    assert response.headers["Content-Security-Policy"] == auth.CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "same-origin"


# -- servers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured(tmp_path_factory, target_env):
    """A server on 127.0.0.1 that requires a token."""
    instance = GreenbatchServer(
        tmp_path_factory.mktemp("secured"), {**target_env, "GREENBATCH_API_TOKENS": f"{TOKEN}, {OTHER_TOKEN}"}
    ).start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def open_server(tmp_path_factory, target_env):
    """A server on 127.0.0.1 with no token: open, but only to this machine."""
    instance = GreenbatchServer(tmp_path_factory.mktemp("open"), target_env).start()
    yield instance
    instance.stop()


# -- rules that need no server ---------------------------------------------------------------


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("127.255.255.254", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LocalHost.", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("192.168.1.10", False),
        ("example.com", False),
        ("localhost.example.com", False),
        ("", False),
    ],
)
def test_loopback_means_127_0_0_0_slash_8_ipv6_loopback_or_localhost(host, loopback):
    assert auth.is_loopback(host) is loopback


@pytest.mark.parametrize(
    "host, tokens, warn",
    [
        ("0.0.0.0", (), True),
        ("::", (), True),
        ("10.1.2.3", (), True),
        ("0.0.0.0", (TOKEN,), False),
        ("127.0.0.1", (), False),
        ("::1", (), False),
        ("localhost", (), False),
    ],
)
def test_the_exposed_warning_is_due_only_beyond_loopback_without_tokens(host, tokens, warn):
    assert auth.exposed_without_auth(host, tokens) is warn


def test_the_exposed_warning_says_what_anyone_can_do_and_how_to_set_tokens(caplog, tmp_path):
    config = Config(host="0.0.0.0", data_dir=str(tmp_path))
    rules = auth.AccessRules(
        tokens=(),
        secret=b"k" * 32,
        allowed_origins=frozenset(),
        loopback_names_only=False,
        ended=auth.EndedSessions(str(tmp_path / "ended_sessions"), 60),
    )
    with caplog.at_level(logging.INFO, logger="app.web.auth"):
        auth.announce(config, rules)
    [record] = caplog.records
    text = record.getMessage()
    assert record.levelno == logging.WARNING
    assert "0.0.0.0" in text and "NO authentication" in text
    assert "fetch" in text and "inside your network" in text
    assert "GREENBATCH_API_TOKENS" in text and "GREENBATCH_TOKEN_FILE" in text
    assert text.count("\n") >= 5


@pytest.mark.parametrize(
    "next_path, expected",
    [
        ("/", "/"),
        ("/batches/abc123", "/batches/abc123"),
        ("/batches/abc?x=1&y=2", "/batches/abc?x=1&y=2"),
        (None, "/"),
        ("", "/"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("\\\\evil.example", "/"),
        ("/\t/evil.example", "/"),
        ("/\n/evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("batches", "/"),
    ],
)
def test_next_after_login_is_a_local_path_or_the_index(next_path, expected):
    assert auth.safe_next(next_path) == expected


def test_tokens_come_from_the_variable_and_the_file_without_comments_or_blanks(tmp_path):
    token_file = tmp_path / "tokens"
    token_file.write_text(f"# operators\n\n  {FILE_TOKEN}  \n# {OTHER_TOKEN} is retired\n{TOKEN}\n")
    config = Config(api_tokens=f" {TOKEN} ,,", token_file=str(token_file))
    assert auth.load_tokens(config) == (TOKEN, FILE_TOKEN)


@pytest.mark.parametrize(
    "settings, named, secret",
    [
        ({"api_tokens": "shorty"}, "GREENBATCH_API_TOKENS: token #1", "shorty"),
        ({"api_tokens": f"{TOKEN},has spaces in it, sadly"}, "GREENBATCH_API_TOKENS: token #2", "has spaces"),
        ({"token_file": "/nonexistent/tokens"}, "GREENBATCH_TOKEN_FILE='/nonexistent/tokens' cannot be read", None),
        ({"allowed_origins": "evil.example"}, "GREENBATCH_ALLOWED_ORIGINS", None),
        ({"secret_key": "tooshort"}, "GREENBATCH_SECRET_KEY", "tooshort"),
    ],
)
def test_unusable_auth_settings_stop_the_start_naming_the_variable_but_not_the_secret(
    settings, named, secret, tmp_path
):
    config = Config(data_dir=str(tmp_path), **settings)
    with pytest.raises(ConfigError) as caught:
        auth.load_tokens(config)
        auth.parse_origins(config.allowed_origins)
        auth.load_secret_key(config)
    assert named in str(caught.value)
    assert secret is None or secret not in str(caught.value)


@pytest.mark.parametrize("entry", ["nginx.internal", "10.0.0.300", "10.0.0.5/8", "[::1]"])
def test_a_trusted_proxy_that_is_not_an_ip_address_or_cidr_stops_the_start_naming_the_variable(entry):
    with pytest.raises(ConfigError) as caught:
        auth.parse_proxies(f"127.0.0.1, {entry}")
    assert "GREENBATCH_TRUSTED_PROXIES" in str(caught.value) and repr(entry) in str(caught.value)


def test_a_server_whose_trusted_proxies_name_a_host_does_not_start(make_server):
    with pytest.raises(RuntimeError, match=r"cannot start: GREENBATCH_TRUSTED_PROXIES: 'nginx\.internal' is not"):
        make_server(env={"GREENBATCH_PROXY_HOPS": "1", "GREENBATCH_TRUSTED_PROXIES": "127.0.0.1,nginx.internal"})


def test_trusted_proxies_take_addresses_and_cidrs_and_default_to_this_host():
    assert auth.parse_proxies(Config().trusted_proxies) == auth.parse_proxies("127.0.0.1/32, ::1/128")
    proxies = auth.TrustedProxies(1, auth.parse_proxies("10.0.0.0/24,fd00::7"), "10.0.0.0/24,fd00::7")
    for peer, trusted in [
        ("10.0.0.9", True),
        ("::ffff:10.0.0.9", True),
        ("fd00::7", True),
        ("10.0.1.9", False),
        ("127.0.0.1", False),
        ("", False),
    ]:
        assert proxies.trusts({"REMOTE_ADDR": peer}) is trusted, peer
    assert not auth.TrustedProxies(0, proxies.networks, "").trusts({"REMOTE_ADDR": "10.0.0.9"})  # no hops: no proxy


def test_tokens_and_keys_stay_out_of_the_config_repr():
    text = repr(Config(api_tokens=TOKEN, secret_key="s" * 32))
    assert TOKEN not in text and "s" * 32 not in text


def test_the_access_log_hides_query_tokens():
    # logs.log_access writes every access line through logs.redact (end to end: the websocket test below).
    line = logs.redact(f"/ws/batches?token={TOKEN}&x=1")
    assert TOKEN not in line
    assert "token=[redacted]&x=1" in line
    assert (
        logs.redact("/ws/batches?TOKEN=a&Access_Token=b&tokens=kept&after=3")
        == "/ws/batches?TOKEN=[redacted]&Access_Token=[redacted]&tokens=kept&after=3"
    )


# -- the websocket gate, called as the websocket handler calls it ----------------------------


@pytest.fixture
def gated_app(tmp_path):
    """An app with only the auth rules, to call the gate with hand-made environs."""
    app = Flask("gate-test", template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static"))
    app.config["GREENBATCH"] = Config(data_dir=str(tmp_path), api_tokens=TOKEN, allowed_origins="https://dash.example")
    auth.init_app(app)
    return app


def ws_environ(**headers: str) -> dict[str, str]:
    """The environ of a websocket upgrade to 127.0.0.1:8000."""
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/ws/batches",
        "QUERY_STRING": "",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_UPGRADE": "websocket",
        "HTTP_CONNECTION": "Upgrade",
    }
    environ.update({k: v for k, v in headers.items()})
    return environ


def test_gate_refuses_a_foreign_origin_even_with_a_valid_token(gated_app):
    gate = auth.websocket_gate(gated_app)
    refusal = gate(ws_environ(HTTP_ORIGIN=EVIL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}"))
    assert refusal.status == 403 and EVIL in refusal.message and "GREENBATCH_ALLOWED_ORIGINS" in refusal.message
    assert gate(ws_environ(HTTP_ORIGIN="null", HTTP_AUTHORIZATION=f"Bearer {TOKEN}"))[0] == 403


def test_gate_takes_same_host_and_allowed_origins_with_credentials(gated_app):
    gate = auth.websocket_gate(gated_app)
    assert gate(ws_environ(HTTP_ORIGIN="http://127.0.0.1:8000", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")) is None
    assert gate(ws_environ(HTTP_ORIGIN="https://dash.example", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")) is None
    assert gate(ws_environ(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")) is None  # no Origin: not a browser


def test_gate_answers_401_without_credentials_or_with_a_wrong_token(gated_app):
    gate = auth.websocket_gate(gated_app)
    assert gate(ws_environ(HTTP_ORIGIN="http://127.0.0.1:8000"))[0] == 401
    assert gate(ws_environ(HTTP_AUTHORIZATION=f"Bearer {OTHER_TOKEN}"))[0] == 401
    assert gate(ws_environ(QUERY_STRING=f"token={OTHER_TOKEN}"))[0] == 401


def test_gate_takes_a_query_token_for_clients_that_cannot_set_headers(gated_app):
    assert auth.websocket_gate(gated_app)(ws_environ(QUERY_STRING=f"after=3&token={TOKEN}")) is None


@pytest.mark.parametrize(
    "query",
    [
        "token=SECRET",
        "%74oken=SECRET",
        "t%6Fken=SECRET",
        "%74%6F%6B%65%6E=SECRET",
        "after=3&tok%65n=SECRET",
        "token=SECRET&%74oken=SECRET2",
    ],
)
def test_every_query_name_the_gate_reads_as_token_is_hidden_in_the_access_log(gated_app, query):
    query = query.replace("SECRET", TOKEN)
    assert auth.websocket_gate(gated_app)(ws_environ(QUERY_STRING=query)) is None  # the gate takes it as the token
    line = logs.redact("/ws/batches?" + query)
    assert TOKEN not in line and "=[redacted]" in line


def test_gate_reads_the_login_cookie_outside_a_request_context(gated_app):
    client = gated_app.test_client()
    page = client.get("/login")
    answer = client.post("/login", data={"csrf_token": form_token(page.get_data(as_text=True)), "token": TOKEN})
    assert answer.status_code == 303
    cookie = client.get_cookie("greenbatch_session")
    gate = auth.websocket_gate(gated_app)
    assert gate(ws_environ(HTTP_COOKIE=f"greenbatch_session={cookie.value}")) is None
    tampered = cookie.value[:-2] + ("AA" if not cookie.value.endswith("AA") else "BB")
    assert gate(ws_environ(HTTP_COOKIE=f"greenbatch_session={tampered}"))[0] == 401


# -- the API with tokens ---------------------------------------------------------------------


def test_api_without_a_token_answers_401_envelope_with_www_authenticate(secured):
    response = secured.request("GET", "/api/v1/batches")
    assert response.status_code == 401
    assert error_of(response)["code"] == "unauthorized"
    assert "Authorization: Bearer" in error_of(response)["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_api_with_a_wrong_token_answers_401_invalid_token(secured):
    response = secured.request("GET", "/api/v1/batches", headers=bearer("x" * 32))
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_token"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_api_with_a_right_token_answers_200_and_either_token_works(secured):
    assert secured.request("GET", "/api/v1/batches", headers=bearer(TOKEN)).status_code == 200
    assert secured.request("GET", "/api/v1/batches", headers=bearer(OTHER_TOKEN)).status_code == 200


def test_bearer_posts_need_no_csrf_header(secured, target):
    response = secured.request("POST", "/api/v1/batches", json=batch_body(target), headers=bearer())
    assert response.status_code == 201, response.text


def test_a_query_token_is_not_accepted_by_the_http_api(secured):
    assert secured.request("GET", f"/api/v1/batches?token={TOKEN}").status_code == 401


def test_tokens_from_the_token_file_are_accepted(make_server, tmp_path):
    token_file = tmp_path / "tokens"
    token_file.write_text(f"# one per line\n{FILE_TOKEN}\n")
    server = make_server(env={"GREENBATCH_TOKEN_FILE": str(token_file)})
    assert server.request("GET", "/api/v1/batches", headers=bearer(FILE_TOKEN)).status_code == 200
    assert server.request("GET", "/api/v1/batches").status_code == 401


def wait_for_log(server: GreenbatchServer, text: str, occurrences: int = 1) -> None:
    """Wait until the server's log says `text` (at least `occurrences` times)."""
    deadline = time.monotonic() + 10
    while server.log().count(text) < occurrences and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.log().count(text) >= occurrences, server.log()[-2000:]


def test_sighup_rereads_the_token_file_and_ends_the_sessions_of_removed_tokens(make_server, tmp_path):
    token_file = tmp_path / "tokens"
    token_file.write_text(f"{TOKEN}\n")
    server = make_server(env={"GREENBATCH_TOKEN_FILE": str(token_file)})
    signed_in, _ = log_in(server, TOKEN)
    token_file.write_text(f"# {TOKEN} is retired\n{FILE_TOKEN}\n")
    server.signal(signal.SIGHUP)
    wait_for_log(server, "tokens reloaded: 1 API token(s) in use, 1 new, 1 removed")
    assert server.request("GET", "/api/v1/batches", headers=bearer(TOKEN)).status_code == 401
    assert server.request("GET", "/api/v1/batches", headers=bearer(FILE_TOKEN)).status_code == 200
    assert signed_in.get(server.url("/api/v1/batches"), timeout=10).status_code == 401
    status, _ = websocket_handshake(server, "/ws/batches", bearer(FILE_TOKEN))
    assert status == 101


def test_a_reload_that_would_open_the_server_or_cannot_be_read_keeps_the_tokens_in_use(make_server, tmp_path):
    token_file = tmp_path / "tokens"
    token_file.write_text(f"{TOKEN}\n")
    server = make_server(env={"GREENBATCH_TOKEN_FILE": str(token_file)})
    token_file.write_text("# everyone is gone\n")
    server.signal(signal.SIGHUP)
    wait_for_log(server, "the new set is empty, and a reload never turns authentication off")
    token_file.write_text("short\n")
    server.signal(signal.SIGHUP)
    wait_for_log(server, "line 1 is 5 characters")
    assert server.request("GET", "/api/v1/batches", headers=bearer(TOKEN)).status_code == 200
    assert server.request("GET", "/api/v1/batches").status_code == 401


def test_an_open_server_stays_open_on_sighup(make_server):
    server = make_server()
    server.signal(signal.SIGHUP)
    wait_for_log(server, "this server started without API tokens and stays open")
    assert server.request("GET", "/api/v1/batches").status_code == 200


def test_probes_stay_open_without_credentials(secured):
    for path in ("/healthz", "/readyz"):
        response = secured.request("GET", path, allow_redirects=False)
        assert response.status_code not in (301, 302, 303, 401), (path, response.status_code)


def test_static_files_stay_open_so_the_login_page_has_its_style(secured):
    assert secured.request("GET", "/static/login.css").status_code == 200


# -- pages and login -------------------------------------------------------------------------


def test_pages_redirect_to_login_with_where_they_were(secured):
    response = secured.request(
        "GET", "/batches/abc123?view=failed", allow_redirects=False, headers={"Accept": "text/html"}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/batches/abc123?view%3Dfailed"


def test_a_page_with_a_bearer_token_is_served(secured):
    response = secured.request("GET", "/", headers={**bearer(), "Accept": "text/html"})
    assert response.status_code == 200


def test_login_with_the_right_token_sets_an_httponly_lax_cookie_without_secure_over_http(secured):
    session, answer = log_in(secured, next_path="/batches/abc123")
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/batches/abc123"
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith("greenbatch_session=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie
    assert session.get(secured.url("/api/v1/batches"), timeout=10).status_code == 200
    assert session.get(secured.url("/"), timeout=10, headers={"Accept": "text/html"}).status_code == 200


def test_login_behind_an_https_proxy_sets_a_secure_cookie(make_server):
    server = make_server(env={"GREENBATCH_API_TOKENS": TOKEN, "GREENBATCH_PROXY_HOPS": "1"})
    https = {"X-Forwarded-Proto": "https"}
    page = server.request("GET", "/login", headers=https)
    assert "Secure" in page.headers["Set-Cookie"]
    cookie = page.headers["Set-Cookie"].split(";", 1)[0]  # a Secure cookie: sent by hand over this plain http
    answer = requests.post(
        server.url("/login"),
        data={"csrf_token": form_token(page.text), "token": TOKEN},
        headers={**https, "Cookie": cookie},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 303
    assert "Secure" in answer.headers["Set-Cookie"] and "HttpOnly" in answer.headers["Set-Cookie"]


def test_login_with_a_wrong_token_shows_the_form_again_with_401(secured):
    session, answer = log_in(secured, token="x" * 32)
    assert answer.status_code == 401
    assert "That token is not valid." in answer.text
    assert session.get(secured.url("/api/v1/batches"), timeout=10).status_code == 401


def test_login_without_the_forms_csrf_token_is_refused(secured):
    session = browser_session()
    session.get(secured.url("/login"), timeout=10)
    answer = session.post(
        secured.url("/login"), data={"token": TOKEN, "csrf_token": "forged"}, allow_redirects=False, timeout=10
    )
    assert answer.status_code == 400
    assert session.get(secured.url("/api/v1/batches"), timeout=10).status_code == 401


@pytest.mark.parametrize(
    "next_path", ["//evil.example/", "https://evil.example/", "/\\evil.example", "/\t/evil.example"]
)
def test_login_refuses_to_redirect_off_site(secured, next_path):
    _, answer = log_in(secured, next_path=next_path)
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/"


def test_logout_ends_the_session(secured):
    session, _ = log_in(secured)
    page = session.get(secured.url("/login"), timeout=10, allow_redirects=False)
    assert page.status_code == 303  # signed in: the login page sends you on
    refused = session.post(secured.url("/logout"), allow_redirects=False, timeout=10)
    assert refused.status_code == 403  # neither the form's token nor the CSRF header
    answer = session.post(secured.url("/logout"), headers=CSRF, allow_redirects=False, timeout=10)
    assert answer.status_code == 303
    assert session.get(secured.url("/api/v1/batches"), timeout=10).status_code == 401


def test_logout_ends_the_session_on_the_server_so_a_copied_cookie_stops_working_even_after_a_restart(
    make_server, tmp_path
):
    data_dir = tmp_path / "data"
    server = make_server(env={"GREENBATCH_API_TOKENS": TOKEN}, data_dir=data_dir)
    browser, _ = log_in(server)
    copied = browser.cookies.get("greenbatch_session")
    assert with_cookie(server, "/api/v1/batches", copied).status_code == 200  # the copy works while signed in
    assert browser.post(server.url("/logout"), headers=CSRF, allow_redirects=False, timeout=10).status_code == 303

    def assert_refused(server: GreenbatchServer) -> None:
        api = with_cookie(server, "/api/v1/batches", copied)
        assert api.status_code == 401 and error_of(api)["code"] == "unauthorized"
        page = with_cookie(server, "/batches/abc123", copied, Accept="text/html")
        assert page.status_code == 302 and urlsplit(page.headers["Location"]).path == "/login"
        assert page.headers["Set-Cookie"].startswith("greenbatch_session=;")  # dropped, never signed again
        status, _ = websocket_handshake(
            server, "/ws/batches", {"Origin": server.base_url, "Cookie": f"greenbatch_session={copied}"}
        )
        assert status == 401

    assert_refused(server)
    server.stop()
    server = make_server(env={"GREENBATCH_API_TOKENS": TOKEN}, data_dir=data_dir)
    assert_refused(server)
    again, _ = log_in(server)  # signing in again starts a new session
    assert again.get(server.url("/api/v1/batches"), timeout=10).status_code == 200


def test_ended_sessions_are_kept_until_their_cookies_have_expired(tmp_path):
    clock, path = Clock(), tmp_path / "ended_sessions"
    ended = auth.EndedSessions(str(path), lifetime=100, clock=clock)
    assert not ended.ended("a", 900)
    ended.end("a")
    clock.now += 60
    ended.end("b")
    assert ended.ended("a", 900) and ended.ended("b", 900) and not ended.ended("c", 900)
    assert ended.ended(None, 900) and ended.ended("c", None)  # a cookie from before session ids
    clock.now += 50  # every cookie of "a" has expired by now (ended at 1000, a lifetime of 100), not those of "b"
    with path.open("a") as handle:
        handle.write("1105.0")  # a line cut short by a crash
    reread = auth.EndedSessions(str(path), lifetime=100, clock=clock)
    assert not reread.ended("a", 900) and reread.ended("b", 900)
    assert path.read_text().splitlines() == ["1060.000 b"]  # expired and unreadable lines dropped


def test_past_the_limit_of_ended_sessions_every_session_signed_in_so_far_ends(tmp_path):
    clock, path = Clock(), tmp_path / "ended_sessions"
    ended = auth.EndedSessions(str(path), lifetime=100, clock=clock)
    ended.LIMIT = 3
    for session_id in "abc":
        ended.end(session_id)
    clock.now += 1
    ended.end("d")
    assert path.read_text().splitlines() == ["1001.000 *"]  # the file starts over
    for sessions in (ended, auth.EndedSessions(str(path), lifetime=100, clock=clock)):
        assert sessions.ended("a", 1000) and sessions.ended("z", 1000.5)  # signed in before: ended
        assert not sessions.ended("y", 1001.5)  # signed in after


def test_sessions_survive_a_restart_and_end_when_their_token_is_removed(make_server, tmp_path):
    data_dir = tmp_path / "data"
    server = make_server(env={"GREENBATCH_API_TOKENS": f"{TOKEN},{OTHER_TOKEN}"}, data_dir=data_dir)
    mine, _ = log_in(server, TOKEN)
    theirs, _ = log_in(server, OTHER_TOKEN)
    key_file = data_dir / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    server.stop()
    server = make_server(env={"GREENBATCH_API_TOKENS": TOKEN}, data_dir=data_dir)
    for session, expected in ((mine, 200), (theirs, 401)):
        session.cookies.clear_expired_cookies()
        response = session.get(server.url("/api/v1/batches"), timeout=10)
        assert response.status_code == expected


def test_web_processes_starting_together_share_one_whole_key_for_login_cookies(tmp_path):
    # gunicorn -w N in cluster mode: N processes make or read the data folder's key at the same moment.
    script = (
        "from app.core.config import Config; from app.web import auth; print(auth.load_secret_key(Config.from_env()))"
    )
    env = {**os.environ, "GREENBATCH_DATA_DIR": str(tmp_path)}
    starts = [
        subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    keys = {start.communicate(timeout=30)[0].strip() for start in starts}
    assert len(keys) == 1 and len(keys.pop()) == 64
    assert os.listdir(tmp_path) == ["secret_key"]
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600


# -- CSRF and Origin -------------------------------------------------------------------------


def test_cookie_post_without_the_csrf_header_is_403_and_with_it_201(secured, target):
    session, _ = log_in(secured)
    refused = session.post(secured.url("/api/v1/batches"), json=batch_body(target), timeout=10)
    assert refused.status_code == 403
    assert error_of(refused)["code"] == "csrf_header_missing"
    assert "X-Requested-With: greenbatch" in error_of(refused)["message"]
    accepted = session.post(secured.url("/api/v1/batches"), json=batch_body(target), headers=CSRF, timeout=10)
    assert accepted.status_code == 201, accepted.text


def test_cookie_delete_without_the_csrf_header_is_403(secured, target):
    batch = secured.request("POST", "/api/v1/batches", json=batch_body(target), headers=bearer()).json()
    session, _ = log_in(secured)
    refused = session.delete(secured.url(f"/api/v1/batches/{batch['id']}"), timeout=10)
    assert refused.status_code == 403


def test_cross_origin_post_is_403_even_with_cookie_and_csrf_header(secured, target):
    session, _ = log_in(secured)
    response = session.post(
        secured.url("/api/v1/batches"), json=batch_body(target), headers={**CSRF, "Origin": EVIL}, timeout=10
    )
    assert response.status_code == 403
    assert error_of(response)["code"] == "cross_origin_request"
    assert EVIL in error_of(response)["message"]


def test_same_origin_post_with_cookie_and_csrf_header_is_201(secured, target):
    session, _ = log_in(secured)
    response = session.post(
        secured.url("/api/v1/batches"),
        json=batch_body(target),
        headers={**CSRF, "Origin": secured.base_url},
        timeout=10,
    )
    assert response.status_code == 201, response.text


def test_cross_site_form_post_to_an_open_loopback_server_is_403(open_server, target):
    response = open_server.request(
        "POST", "/api/v1/batches", data=target.url("/ok"), headers={"Content-Type": "text/plain", "Origin": EVIL}
    )
    assert response.status_code == 403
    assert (
        open_server.request(
            "POST", "/api/v1/batches", data=target.url("/ok"), headers={"Content-Type": "text/plain", "Origin": "null"}
        ).status_code
        == 403
    )


def test_an_open_loopback_server_takes_posts_without_credentials_from_this_machine(open_server, target):
    response = open_server.request(
        "POST", "/api/v1/batches", json=batch_body(target), headers={"Origin": open_server.base_url}
    )
    assert response.status_code == 201, response.text


def test_an_open_loopback_server_refuses_other_host_names_against_dns_rebinding(open_server):
    response = open_server.request("GET", "/api/v1/batches", headers={"Host": "rebind.evil.example:8000"})
    assert response.status_code == 403
    assert error_of(response)["code"] == "host_not_allowed"
    assert open_server.request("GET", "/api/v1/batches", headers={"Host": "localhost"}).status_code == 200


def test_allowed_origins_may_post(make_server, target):
    server = make_server(env={"GREENBATCH_API_TOKENS": TOKEN, "GREENBATCH_ALLOWED_ORIGINS": "https://dash.example"})
    response = server.request(
        "POST", "/api/v1/batches", json=batch_body(target), headers={**bearer(), "Origin": "https://dash.example"}
    )
    assert response.status_code == 201, response.text


# -- websockets on the real server -----------------------------------------------------------


def test_websocket_from_a_foreign_origin_is_403_and_never_upgraded(secured):
    status, body = websocket_handshake(secured, "/ws/batches", {"Origin": EVIL, **bearer()})
    assert status == 403
    assert EVIL in json.loads(body)["error"]["message"]


def test_websocket_without_credentials_is_401(secured):
    status, body = websocket_handshake(secured, "/ws/batches", {"Origin": secured.base_url})
    assert status == 401
    assert "Bearer" in json.loads(body)["error"]["message"]


def test_websocket_with_the_login_cookie_upgrades(secured):
    session, _ = log_in(secured)
    cookie = session.cookies.get("greenbatch_session")
    status, _ = websocket_handshake(
        secured, "/ws/batches", {"Origin": secured.base_url, "Cookie": f"greenbatch_session={cookie}"}
    )
    assert status == 101


def test_websocket_with_a_query_token_upgrades_and_the_log_hides_it(secured):
    connection = websocket.create_connection(
        secured.base_url.replace("http://", "ws://") + f"/ws/batches?token={TOKEN}", timeout=10, suppress_origin=True
    )
    assert connection.getstatus() == 101
    connection.close()  # the access line is written when the websocket ends
    deadline = time.monotonic() + 10
    while "/ws/batches?token=[redacted]" not in secured.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "/ws/batches?token=[redacted]" in secured.log()
    assert TOKEN not in secured.log()


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_percent_encoded_query_token_opens_a_websocket_but_never_reaches_the_log(make_server, log_format):
    server = make_server(env={"GREENBATCH_API_TOKENS": TOKEN, "GREENBATCH_LOG_FORMAT": log_format})
    connection = websocket.create_connection(
        server.base_url.replace("http://", "ws://") + f"/ws/batches?%74oken={TOKEN}", timeout=10, suppress_origin=True
    )
    assert connection.getstatus() == 101
    connection.close()  # the access line is written when the websocket ends
    assert get_from(server, "127.0.0.1", f"/healthz?t%6Fken={TOKEN}", {}) == 200  # requests would decode the "o"
    assert server.request("GET", f"/api/v1/batches?TOKEN={TOKEN}", headers=bearer()).status_code == 200
    for line in ("/ws/batches?%74oken=[redacted]", "/healthz?t%6Fken=[redacted]", "/api/v1/batches?TOKEN=[redacted]"):
        wait_for_log(server, line)  # access lines are written once each answer has left
    assert TOKEN not in server.log()


# -- guessing tokens ---------------------------------------------------------------------------


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_that_sent_the_limit_of_invalid_tokens_waits_until_the_oldest_ages_out():
    clock = Clock()
    failures = auth.FailedTokens(limit=3, window=60, clock=clock)
    for _ in range(2):
        failures.failed("10.0.0.7")
        clock.now += 10
    assert failures.wait("10.0.0.7") == 0  # two of three
    failures.failed("10.0.0.7")  # at 1020: the third, while the first (1000) is still within the minute
    assert failures.wait("10.0.0.7") == 40
    assert failures.wait("10.0.0.8") == 0  # per address
    clock.now = 1059.5
    assert failures.wait("10.0.0.7") == 1  # whole seconds, rounded up
    clock.now = 1060
    assert failures.wait("10.0.0.7") == 0  # the first aged out: two of three again
    failures.failed("10.0.0.7")
    assert failures.wait("10.0.0.7") == 10  # now the one of 1010 is the oldest
    assert "3 invalid tokens came from 10.0.0.7 within 60 s" in failures.problem("10.0.0.7")
    assert "try again in 10 s" in failures.problem("10.0.0.7")


def test_an_ipv6_host_is_counted_by_its_slash_64_which_it_can_fill_with_addresses():
    failures = auth.FailedTokens(limit=2, window=60)
    failures.failed("2001:db8:1:2::a")
    failures.failed("2001:db8:1:2:ffff::9")
    assert failures.wait("2001:db8:1:2::77") > 0
    assert failures.wait("2001:db8:1:3::a") == 0
    assert "came from 2001:db8:1:2::/64 within" in failures.problem("2001:db8:1:2::a")
    failures.failed("::ffff:192.0.2.7")  # an IPv4 client on a dual-stack socket
    failures.failed("192.0.2.7")
    assert failures.wait("192.0.2.7") > 0


def test_a_limit_of_zero_never_throttles_and_memory_stays_bounded():
    off = auth.FailedTokens(limit=0, window=60)
    for _ in range(100):
        off.failed("10.0.0.7")
    assert off.wait("10.0.0.7") == 0
    failures = auth.FailedTokens(limit=1, window=60)
    failures.MAX_CLIENTS = 5
    for n in range(8):
        failures.failed(f"10.0.0.{n}")
    assert failures.wait("10.0.0.2") == 0 and failures.wait("10.0.0.7") > 0  # the quietest were forgotten


@pytest.fixture
def wary(make_server):
    """A server with a token that stops checking an address's tokens after 3 invalid ones within 2 s."""
    return make_server(
        env={"GREENBATCH_API_TOKENS": TOKEN, "GREENBATCH_AUTH_FAILURES": "3", "GREENBATCH_AUTH_FAILURE_WINDOW": "2"}
    )


def test_after_too_many_invalid_tokens_even_the_right_one_gets_429_until_the_window_passes(wary):
    signed_in, _ = log_in(wary)  # before the guessing starts
    for _ in range(3):
        assert wary.request("GET", "/api/v1/batches", headers=bearer("x" * 32)).status_code == 401
    refused = wary.request("GET", "/api/v1/batches", headers=bearer())
    assert refused.status_code == 429
    error = error_of(refused)
    assert error["code"] == "too_many_invalid_tokens"
    assert "3 invalid tokens came from 127.0.0.1 within 2 s" in error["message"]
    assert "GREENBATCH_AUTH_FAILURES" in error["message"]
    wait = int(refused.headers["Retry-After"])
    assert 1 <= wait <= 2
    # A signed-in browser is not guessing, and a request without any token is told what it lacks.
    assert signed_in.get(wary.url("/api/v1/batches"), timeout=10).status_code == 200
    assert wary.request("GET", "/api/v1/batches").status_code == 401
    status, body = websocket_handshake(wary, f"/ws/batches?token={TOKEN}", {})
    assert status == 429 and "invalid tokens" in json.loads(body)["error"]["message"]
    login_page = browser_session()
    form = login_page.get(wary.url("/login"), timeout=10)
    answer = login_page.post(
        wary.url("/login"),
        data={"csrf_token": form_token(form.text), "token": TOKEN},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 429 and "Too many invalid tokens came from your address" in answer.text
    time.sleep(wait + 0.2)
    assert wary.request("GET", "/api/v1/batches", headers=bearer()).status_code == 200


def test_invalid_tokens_typed_into_the_login_form_count_too(wary):
    for _ in range(3):
        assert log_in(wary, token="x" * 32)[1].status_code == 401
    assert wary.request("GET", "/api/v1/batches", headers=bearer()).status_code == 429


def test_behind_a_proxy_each_forwarded_address_has_its_own_count(make_server):
    server = make_server(
        env={"GREENBATCH_API_TOKENS": TOKEN, "GREENBATCH_PROXY_HOPS": "1", "GREENBATCH_AUTH_FAILURES": "2"}
    )
    guesser, neighbour = {"X-Forwarded-For": "203.0.113.9"}, {"X-Forwarded-For": "198.51.100.4"}
    for _ in range(2):
        assert server.request("GET", "/api/v1/batches", headers={**guesser, **bearer("x" * 32)}).status_code == 401
    refused = server.request("GET", "/api/v1/batches", headers={**guesser, **bearer()})
    assert refused.status_code == 429 and "203.0.113.9" in error_of(refused)["message"]
    assert server.request("GET", "/api/v1/batches", headers={**neighbour, **bearer()}).status_code == 200
    status, _ = websocket_handshake(server, f"/ws/batches?token={TOKEN}", guesser)
    assert status == 429


def test_a_client_reaching_the_port_directly_cannot_lock_out_a_proxied_address_by_forging_x_forwarded_for(make_server):
    # The proxy connects from 127.0.0.2; this test's own connections come from 127.0.0.1, as a client's
    # that reaches greenbatch's port directly would.
    server = make_server(
        env={
            "GREENBATCH_API_TOKENS": TOKEN,
            "GREENBATCH_PROXY_HOPS": "1",
            "GREENBATCH_TRUSTED_PROXIES": "127.0.0.2",
            "GREENBATCH_AUTH_FAILURES": "2",
        }
    )
    victim = {"X-Forwarded-For": "198.51.100.4"}
    for _ in range(2):
        assert server.request("GET", "/api/v1/batches", headers={**victim, **bearer("x" * 32)}).status_code == 401
    assert get_from(server, "127.0.0.2", "/api/v1/batches", {**victim, **bearer()}) == 200
    # The guesses counted against the address they came from, whatever it claimed.
    refused = server.request("GET", "/api/v1/batches", headers={"X-Forwarded-For": "203.0.113.9", **bearer()})
    assert refused.status_code == 429 and "came from 127.0.0.1 within" in error_of(refused)["message"]
    status, body = websocket_handshake(server, f"/ws/batches?token={TOKEN}", {"X-Forwarded-For": "203.0.113.9"})
    assert status == 429 and "came from 127.0.0.1 within" in json.loads(body)["error"]["message"]
    wait_for_log(server, "ignored the X-Forwarded-* headers of a request from 127.0.0.1")
    assert server.log().count("is not a trusted proxy (GREENBATCH_TRUSTED_PROXIES=127.0.0.2)") == 1  # said once


# -- headers -----------------------------------------------------------------------------------


def test_security_headers_are_on_pages_api_answers_and_errors(secured):
    page = secured.request("GET", "/", headers={**bearer(), "Accept": "text/html"})
    api = secured.request("GET", "/api/v1/batches", headers=bearer())
    missing = secured.request("GET", "/api/v1/batches/nope", headers=bearer())
    refused = secured.request("GET", "/api/v1/batches")
    login = secured.request("GET", "/login")
    assert (page.status_code, api.status_code, missing.status_code, refused.status_code) == (200, 200, 404, 401)
    for response in (page, api, missing, refused, login):
        assert_security_headers(response)
    for response in (api, missing, refused, login):
        assert response.headers["Cache-Control"] == "no-store"


# -- what the server says at start -----------------------------------------------------------


def test_a_loopback_server_without_tokens_prints_no_exposure_warning(open_server):
    log = open_server.log()
    assert "greenbatch listening on http://127.0.0.1:" in log
    assert "WARNING" not in log and "NO authentication" not in log
    assert "without authentication" in log  # the quiet, informational line


def test_a_server_with_tokens_says_authentication_is_on(secured):
    assert "authentication is on: 2 API token(s)" in secured.log()
    assert TOKEN not in secured.log()


# -- a real browser (conftest's `browser`: one Chromium for the whole run) ----------------------


@pytest.mark.browser
def test_browser_csp_connect_src_self_allows_this_hosts_websockets_and_blocks_others(browser, open_server, target):
    page = browser.new_page()
    try:
        page.goto(open_server.url("/api/v1/batches"))
        port = urlsplit(open_server.base_url).port
        blocked = page.evaluate(
            """async (urls) => {
            const blocked = [];
            document.addEventListener("securitypolicyviolation", e => blocked.push(e.blockedURI));
            for (const url of urls) {
                try { new WebSocket(url).onerror = () => {}; } catch (e) { blocked.push(url); }
            }
            await new Promise(resolve => setTimeout(resolve, 500));
            return blocked;
        }""",
            [f"ws://127.0.0.1:{port}/ws/batches", f"ws://127.0.0.1:{target.port}/elsewhere"],
        )
    finally:
        page.close()
    assert any(str(target.port) in url for url in blocked), blocked
    assert not any(f":{port}" in url for url in blocked), blocked


@pytest.mark.browser
def test_browser_same_origin_post_passes_and_a_cross_site_post_is_refused(browser, open_server, target):
    before = open_server.request("GET", "/api/v1/batches").json()["batches"]
    page = browser.new_page()
    try:
        page.goto(open_server.url("/api/v1/batches"))
        own = page.evaluate(
            """async ([url, target]) => (await fetch(url, {method: "POST",
            headers: {"Content-Type": "application/json", "X-Requested-With": "greenbatch"},
            body: JSON.stringify({urls: [target], name: "own page"})})).status""",
            [open_server.url("/api/v1/batches"), target.url("/ok")],
        )
        page.goto(target.url("/html"))  # another origin, as an attacker's page would be
        page.evaluate(
            """async (url) => { await fetch(url, {method: "POST", mode: "no-cors",
            headers: {"Content-Type": "text/plain"}, body: "http://127.0.0.1:1/?name=cross-site"}); }""",
            open_server.url("/api/v1/batches?name=cross-site"),
        )
    finally:
        page.close()
    after = open_server.request("GET", "/api/v1/batches").json()["batches"]
    names = [b["name"] for b in after[: len(after) - len(before)]]
    assert own == 201
    assert names == ["own page"]


@pytest.mark.browser
def test_browser_login_then_script_posts_with_the_csrf_header(browser, secured, target):
    page = browser.new_page()
    try:
        page.goto(secured.url("/batches/abc123"))
        assert urlsplit(page.url).path == "/login"
        page.fill("#token", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url("**/batches/abc123")
        statuses = page.evaluate(
            """async ([url, body]) => {
            const post = headers => fetch(url, {method: "POST", headers, body: JSON.stringify(body)});
            const without = await post({"Content-Type": "application/json"});
            const withHeader = await post({"Content-Type": "application/json", "X-Requested-With": "greenbatch"});
            return [without.status, withHeader.status];
        }""",
            [secured.url("/api/v1/batches"), batch_body(target)],
        )
        cookies = page.context.cookies()
    finally:
        page.close()
    assert statuses == [403, 201]
    [cookie] = [c for c in cookies if c["name"] == "greenbatch_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"


def test_the_websocket_gate_answers_exactly_as_http_does_for_the_same_client(make_server):
    server = make_server(env={"GREENBATCH_API_TOKENS": TOKEN, "GREENBATCH_AUTH_FAILURES": "2"})

    def answers(headers: dict[str, str]) -> tuple[tuple, tuple]:
        """(status, error code, WWW-Authenticate?, Retry-After?) of an API call and of a websocket upgrade."""
        http = server.request("POST", "/api/v1/batches", json={"urls": ["http://example.com/"]}, headers=headers)
        status, fields, body = websocket_answer(server, "/ws/batches", headers)
        return (
            (
                http.status_code,
                error_of(http)["code"],
                "WWW-Authenticate" in http.headers,
                "Retry-After" in http.headers,
            ),
            (status, json.loads(body)["error"]["code"], "www-authenticate" in fields, "retry-after" in fields),
        )

    http, ws = answers({})
    assert http == ws == (401, "unauthorized", True, False)
    http, ws = answers({**bearer(), "Origin": EVIL})
    assert http == ws == (403, "cross_origin_request", False, False)
    http, ws = answers(bearer(OTHER_TOKEN))  # the second invalid token reaches the limit of 2
    assert http == ws == (401, "invalid_token", True, False)
    http, ws = answers(bearer(OTHER_TOKEN))
    assert http == ws == (429, "too_many_invalid_tokens", False, True)
