"""Who may talk to `serve`'s two ports, written as the attacks they stop: a web page that rebinds its own
name to this machine (DNS rebinding) and reads through it, another site's form that posts searches into
the search log, and the analyst password guessed from ever new loopback addresses."""
from __future__ import annotations

import base64
import http.client
import http.server
import threading
import time

import pytest

from clipsearch.service.clickhouse_http import LoginThrottle, cross_site, host_served, served_hosts
from clipsearch.settings import Settings
from tests.conftest import loaded, random_specs

N = 12
ANALYST = "a person's password"
CROSS_SITE = {"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"}


# -- the rules ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("host,answered", [
    ("127.0.0.1", True), ("127.0.0.1:8000", True), ("localhost:8000", True), ("LocalHost", True),
    ("[::1]:8124", True), ("[::1]", True), ("photos.lan:8000", True),
    ("evil.example", False), ("evil.example:8000", False), ("127.0.0.1.evil.example", False),
    ("localhost.evil.example:8000", False), ("10.0.0.7:8000", False), ("localhost:8000@evil.example", False),
    ("[::1]evil", False), ("localhost:http", False),
])
def test_the_names_a_service_answers_to(host, answered):
    assert host_served(host, served_hosts("127.0.0.1", "photos.lan, other.lan")) is answered


def test_the_listen_address_is_served_and_every_address_when_listening_on_all():
    assert host_served("192.168.1.20:8000", served_hosts("192.168.1.20", None))
    assert not host_served("192.168.1.21:8000", served_hosts("192.168.1.20", None))
    everywhere = served_hosts("0.0.0.0", None)   # compose's service: any address of the machine, no other name
    assert host_served("192.168.1.21:8000", everywhere) and host_served("[fe80::1]:8000", everywhere)
    assert not host_served("evil.example:8000", everywhere)


def test_the_allowed_names_come_from_the_environment_or_the_serve_option():
    assert Settings.load({"CLIPSEARCH_ALLOWED_HOSTS": "photos.lan,nas"}).allowed_hosts == "photos.lan,nas"
    from clipsearch.service.cli import _settings, build_parser
    args = build_parser().parse_args(["serve", "--allowed-host", "photos.lan", "--allowed-host", "nas"])
    assert host_served("nas:8000", served_hosts(args.host, _settings(args).allowed_hosts))


@pytest.mark.parametrize("headers,crossing", [
    ({}, False),                                                      # curl, the CLI, clickhouse-connect
    ({"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost:8000", "Host": "localhost:8000"}, False),
    ({"Sec-Fetch-Site": "none"}, False),                              # typed into the address bar
    ({"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"}, True),
    ({"Sec-Fetch-Site": "same-site", "Origin": "http://localhost:3000"}, True),   # another port's page
    ({"Origin": "http://evil.example", "Host": "localhost:8000"}, True),  # a browser without Sec-Fetch-Site
    ({"Origin": "null", "Host": "localhost:8000"}, True),             # a sandboxed frame
    ({"Origin": "http://localhost:8000", "Host": "localhost:8000"}, False),
])
def test_which_requests_come_from_another_sites_page(headers, crossing):
    assert cross_site(headers) is crossing


def test_guesses_are_bounded_per_login_and_the_right_password_costs_nothing():
    throttle = LoginThrottle(rate=10, burst=10)
    assert [throttle.take("analyst") for _ in range(10)] == [0] * 10
    wait = throttle.take("analyst")
    assert 0 < wait <= 0.1 and throttle.take("clipsearch") == 0   # another login has its own bucket
    time.sleep(wait)
    assert throttle.take("analyst") == 0
    throttle.give_back("analyst")   # that was the right password
    assert throttle.take("analyst") == 0


# -- the page and its API ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def app(tmp_path_factory, model):
    from clipsearch.service.app import create_app
    with loaded(tmp_path_factory.mktemp("gate"), random_specs(N, 34), 34, model) as catalogue:
        assert catalogue.summary.loaded == N
    app = create_app(Settings.load(db=str(catalogue.db), allowed_hosts="photos.lan"), model=model,
                     config={"TESTING": True})
    yield app
    app.extensions["clipsearch"].close()


def logged(app) -> list[str]:
    photos = app.extensions["clipsearch"]
    photos.searcher.log.flush()   # rows are written off the request path, in batches
    return [r["text"] for r in photos.catalog.query("SELECT text FROM search_log ORDER BY time")]


def test_a_rebinding_page_gets_nothing_from_the_page_or_its_api(app):
    """A page at evil.example whose name now resolves to 127.0.0.1 asks with its own name in Host."""
    client, before = app.test_client(), logged(app)
    for host in ("evil.example", "evil.example:8000"):
        for res in (client.get("/", headers={"Host": host}),
                    client.get("/api/search?q=rebound", headers={"Host": host}),
                    client.get("/api/columns", headers={"Host": host}),
                    client.post("/api/sql", json={"sql": "SELECT count() FROM images"}, headers={"Host": host})):
            assert res.status_code == 403 and "evil.example" in res.get_json()["error"], res.data[:200]
    assert logged(app) == before
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "photos.lan"):   # names it serves
        assert client.get("/api/columns", headers={"Host": host}).status_code == 200


def test_a_cross_site_form_post_writes_nothing_while_the_pages_own_search_is_logged(app):
    client, before = app.test_client(), logged(app)
    # <form method=post action=http://localhost:8000/api/search> on another site, submitted by script
    res = client.post("/api/search", data={"text": "spam from the web"}, headers=CROSS_SITE)
    assert res.status_code == 403 and "another site" in res.get_json()["error"]
    # the same from a browser too old for Sec-Fetch-Site, from another port's page, and as an <img src>
    assert client.post("/api/search", data={"text": "spam from the web"},
                       headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.post("/api/search", data={"text": "spam from the web"},
                       headers={"Sec-Fetch-Site": "same-site", "Origin": "http://localhost:3000"}).status_code == 403
    assert client.get("/api/search?q=spam+from+the+web", headers=CROSS_SITE).status_code == 403
    assert logged(app) == before
    # every other endpoint that does work for the caller refuses it too
    assert client.post("/api/label", data={"labels": "a,b"}, headers=CROSS_SITE).status_code == 403
    assert client.post("/api/sql", json={"sql": "SELECT 1"}, headers=CROSS_SITE).status_code == 403
    # the page's own search (what app.js's fetch sends) and curl's are answered and logged as before
    page = client.post("/api/search", json={"text": "a red circle", "k": 3},
                       headers={"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"})
    assert page.status_code == 200 and len(page.get_json()["results"]) == 3
    assert client.post("/api/search", data={"text": "a blue star"}).status_code == 200
    assert logged(app) == [*before, "a red circle", "a blue star"]
    # reading what writes nothing stays possible from another site (a link to an image, the page itself)
    some = page.get_json()["results"][0]["id"]
    assert client.get(f"/api/images/{some}/file", headers=CROSS_SITE).status_code == 200
    assert client.get("/", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200


# -- the ClickHouse port -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def port(app):
    """The port as `serve` makes it, on 127.0.0.1, over the app's folder."""
    from waitress.server import create_server

    from clipsearch.service.clickhouse_http import ClickHouseHTTP
    from clipsearch.store.connection import engine_uri
    photos = app.extensions["clipsearch"]
    sql_app = ClickHouseHTTP(engine_uri(photos.settings.db), "writer-password", ANALYST,
                             policy=photos.analyst_policy, folder=photos.catalog.connection.folder,
                             hosts=served_hosts("127.0.0.1", photos.settings.allowed_hosts))
    server = create_server(sql_app, host="127.0.0.1", port=0, threads=24, asyncore_use_poll=True)
    threading.Thread(target=server.run, daemon=True).start()
    yield server.effective_port
    server.close()


def ask(port: int, sql: str, password: str = ANALYST, host: str | None = None, source: str = "127.0.0.1",
        headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    auth = base64.b64encode(f"analyst:{password}".encode()).decode()
    try:
        conn.request("POST", "/", sql.encode(), {"Authorization": f"Basic {auth}", "Host": host or f"127.0.0.1:{port}",
                                                 **(headers or {})})
        res = conn.getresponse()
        return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
    finally:
        conn.close()


@pytest.mark.slow
def test_a_rebinding_page_gets_nothing_from_the_port(port):
    assert ask(port, "SELECT count() FROM images")[2] == f"{N}\n".encode()
    for host in ("evil.example", f"evil.example:{port}"):
        status, headers, body = ask(port, "SELECT count() FROM images", host=host)
        assert status == 403 and headers["x-clickhouse-exception-code"] == "497", body
        assert body.startswith(b"Code: 497. DB::Exception: Host") and b"evil.example" in body
    assert ask(port, "SELECT 1", host=f"localhost:{port}")[2] == b"1\n"
    assert ask(port, "SELECT 1", host="photos.lan")[2] == b"1\n"
    # a browser's request for another site's page, were its name one the port serves
    assert ask(port, "SELECT 1", headers=CROSS_SITE)[0] == 403


@pytest.mark.slow
def test_guesses_from_rotating_loopback_addresses_are_bounded_per_login(port):
    """1,000 wrong passwords, each from an address of its own in 127.0.0.0/8, as fast as the port answers:
    about 10 are checked a second; the right password then gets in within a tenth of a second."""
    answers, started = [], time.monotonic()
    for i in range(1000):
        source = f"127.{1 + i // 65536}.{i // 256 % 256}.{1 + i % 250}"
        status, headers, body = ask(port, "SELECT 1", password=f"guess {i}", source=source)
        assert status in (401, 429) and headers["x-clickhouse-exception-code"] == "516", body
        answers.append((status, body))
    elapsed = time.monotonic() - started
    checked = [status for status, _ in answers].count(401)   # a 429 is answered without looking at the password
    assert checked <= 10 + 10 * elapsed + 1, (checked, elapsed)
    refused = next(body for status, body in answers if status == 429)
    assert refused.startswith(b"Code: 516. DB::Exception: too many failed logins as analyst: try again in 0.")
    ended = time.monotonic()
    while (status := ask(port, "SELECT 1")[0]) == 429 and time.monotonic() - ended < 2:
        time.sleep(0.02)
    assert status == 200 and time.monotonic() - ended < 1


# -- the real page in a real browser -------------------------------------------------------------------------
@pytest.mark.slow
def test_in_chromium_the_pages_search_is_logged_and_another_sites_form_writes_nothing(app, tmp_path):
    from waitress.server import create_server

    from scripts.screenshot import find_chromium, render
    if not find_chromium():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    server = create_server(app, host="127.0.0.1", port=0, threads=4, asyncore_use_poll=True)
    threading.Thread(target=server.run, daemon=True).start()
    target = f"http://localhost:{server.effective_port}"
    form = (f'<form method="post" action="{target}/api/search"><input name="text" value="posted by evil">'
            '</form><script>document.forms[0].submit()</script>').encode()

    class Attacker(http.server.BaseHTTPRequestHandler):   # another site: 127.0.0.1 is not localhost's site
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(form)))
            self.end_headers()
            self.wfile.write(form)

        def log_message(self, *args: object) -> None:
            pass
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        before = logged(app)
        dom = render(f"http://127.0.0.1:{evil.server_address[1]}/", None)
        assert "another site" in dom   # the form was posted, and refused
        assert render(f"{target}/?q=a+green+star", None).count('class="card"') > 0
    finally:
        evil.shutdown()
        server.close()
    assert logged(app) == [*before, "a green star"]

