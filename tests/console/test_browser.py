"""The operator console in a real browser (headless Chromium) against a real authgate.

Each test drives the pages as an operator would and then checks the effect where it
matters: a pair approved in the console passes ``/auth``, a token revoked there is refused
by ``/auth``, a forged form changes nothing. Screenshots of the main pages are written to
``$AUTHGATE_CONSOLE_SCREENSHOTS`` when set (``docs/console/`` holds the published ones),
else to the test's temporary directory.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from authgate.apikeys import parse_raw_key
from tests.console.browser import chromium
from tests.console.conftest import (
    OPERATOR,
    OPERATOR_PASSWORD,
    PREFIX,
    VIEWER,
    VIEWER_PASSWORD,
    Gate,
    http,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go."""
    configured = os.environ.get("AUTHGATE_CONSOLE_SCREENSHOTS")
    path = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """One headless Chromium for the module (a fresh profile)."""
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


def sign_in(browser: webdriver.Chrome, gate: Gate, username: str, password: str) -> None:
    """Sign in through the password form, starting from no session."""
    browser.delete_all_cookies()
    browser.get(gate.console + "/signin")
    form = browser.find_element(By.CSS_SELECTOR, 'form[data-test="signin-password"]')
    form.find_element(By.NAME, "username").send_keys(username)
    form.find_element(By.NAME, "password").send_keys(password)
    submit(browser, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))


def loaded_anew(browser: webdriver.Chrome) -> None:
    """Wait until a new document replaced the one :func:`mark` marked, and has loaded."""
    WebDriverWait(browser, 10, ignored_exceptions=(WebDriverException,)).until(
        lambda b: b.execute_script(
            "return window.__old === undefined && document.readyState === 'complete'"
        )
    )


def mark(browser: webdriver.Chrome) -> None:
    """Mark the current document (a navigation drops the mark)."""
    browser.execute_script("window.__old = true")


def submit(browser: webdriver.Chrome, button: WebElement) -> None:
    """Click a button that submits a form and wait until the next page has loaded."""
    mark(browser)
    button.click()
    loaded_anew(browser)


def alert_code(browser: webdriver.Chrome) -> str:
    """The stable reason of the page's error notice."""
    element = browser.find_element(By.CSS_SELECTOR, "[role=alert]")
    return str(element.get_attribute("data-error"))


def browser_log(browser: webdriver.Chrome) -> list[dict[str, Any]]:
    """The browser console's messages since the last call."""
    entries: list[dict[str, Any]] = browser.get_log("browser")  # type: ignore[no-untyped-call]
    return entries


def click_and_confirm(browser: webdriver.Chrome, button: WebElement) -> None:
    """Click a danger button and accept the browser's confirmation (console.js)."""
    mark(browser)
    button.click()
    WebDriverWait(browser, 5).until(expected_conditions.alert_is_present())
    browser.switch_to.alert.accept()
    loaded_anew(browser)


def test_a_user_without_the_admin_scope_is_refused(browser: webdriver.Chrome, gate: Gate) -> None:
    """A password user who is not an operator, and a wrong password, do not get a session."""
    sign_in(browser, gate, VIEWER, VIEWER_PASSWORD)
    assert alert_code(browser) == "scope_denied"
    sign_in(browser, gate, OPERATOR, "wrong password, long enough")
    assert alert_code(browser) == "unauthenticated"
    browser.get(gate.console + "/tokens")
    assert browser.current_url.endswith(f"{PREFIX}/signin")


def test_signing_in_shows_the_pending_pairs(
    browser: webdriver.Chrome, gate: Gate, shots: Path
) -> None:
    """After sign-in the home page lists pending pairs with fingerprint and address."""
    browser.delete_all_cookies()
    browser.get(gate.console + "/signin")
    browser.save_screenshot(str(shots / "signin.png"))
    signer, fingerprint, _ = gate.register_pair("build-laptop")
    sign_in(browser, gate, OPERATOR, OPERATOR_PASSWORD)
    assert browser.current_url == gate.console + "/"
    assert browser.find_element(By.CSS_SELECTOR, '[data-test="operator"]').text == OPERATOR
    row = browser.find_element(By.XPATH, f"//tr[.//code[text()='{signer.pair_id}']]")
    assert fingerprint in row.text
    assert "127.0.0.1" in row.text
    browser.save_screenshot(str(shots / "pending-pairs.png"))


def test_approving_a_pending_pair_lets_its_requests_pass(
    browser: webdriver.Chrome, gate: Gate, shots: Path
) -> None:
    """Approve in the console, then a request signed by that pair passes ``/auth``; the
    audit entry names the operator, as the admin API's would."""
    signer, _, _ = gate.register_pair("ci-runner")
    assert gate.signed_auth(signer).status == 401  # pair_pending
    sign_in(browser, gate, OPERATOR, OPERATOR_PASSWORD)
    submit(
        browser, browser.find_element(By.CSS_SELECTOR, f'[data-test="approve-{signer.pair_id}"]')
    )
    assert browser.find_element(By.CSS_SELECTOR, "[role=status]").text == "Pair approved."
    assert gate.signed_auth(signer).status == 200
    browser.get(f"{gate.console}/pairs/{signer.pair_id}")
    assert "operator=admin:" + OPERATOR in browser.find_element(By.TAG_NAME, "table").text
    browser.save_screenshot(str(shots / "pair.png"))
    bearer = {"Authorization": f"Bearer {gate.admin_token()}"}
    trail = http("GET", f"{gate.url}/admin/pairs/{signer.pair_id}", headers=bearer).json()
    approved = [a for a in trail["audit"] if a.get("event") == "approved"]
    assert [a["operator"] for a in approved] == [f"admin:{OPERATOR}"]


def test_denying_a_pending_pair_keeps_it_out(browser: webdriver.Chrome, gate: Gate) -> None:
    """Deny (after the browser's confirmation): the pair's requests are refused for good."""
    signer, _, _ = gate.register_pair("unknown-device")
    sign_in(browser, gate, OPERATOR, OPERATOR_PASSWORD)
    deny = browser.find_element(By.CSS_SELECTOR, f'[data-test="deny-{signer.pair_id}"]')
    click_and_confirm(browser, deny)
    WebDriverWait(browser, 5).until(
        lambda b: b.find_element(By.CSS_SELECTOR, "[role=status]").text == "Pair denied (revoked)."
    )
    reply = gate.signed_auth(signer)
    assert reply.status == 401
    assert b"pair_revoked" in reply.body


def test_a_token_minted_then_revoked_in_the_console_is_refused_by_auth(
    browser: webdriver.Chrome, gate: Gate, shots: Path
) -> None:
    """Mint (shown once), ``/auth`` admits it; revoke its jti, ``/auth`` refuses it."""
    sign_in(browser, gate, OPERATOR, OPERATOR_PASSWORD)
    browser.get(gate.console + "/tokens")
    browser.save_screenshot(str(shots / "tokens.png"))
    form = browser.find_element(By.CSS_SELECTOR, 'form[data-test="mint"]')
    form.find_element(By.NAME, "sub").send_keys("svc-reports")
    form.find_element(By.NAME, "scope").send_keys("read")
    ttl = form.find_element(By.NAME, "ttl_seconds")
    ttl.clear()
    ttl.send_keys("600")
    submit(browser, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    token = str(
        browser.find_element(By.CSS_SELECTOR, '[data-test="secret"]').get_attribute("value")
    )
    jti = browser.find_element(By.CSS_SELECTOR, '[data-test="jti"]').text
    bearer = {"Authorization": f"Bearer {token}"}
    assert gate.auth("/app/reports", bearer).status == 200
    assert f"admin:{OPERATOR}" in browser.find_element(By.CSS_SELECTOR, "table").text
    form = browser.find_element(By.CSS_SELECTOR, 'form[data-test="revoke-token"]')
    form.find_element(By.NAME, "jti").send_keys(jti)
    submit(browser, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    assert browser.find_element(By.CSS_SELECTOR, "[role=status]").text == "Token revoked."
    refused = gate.auth("/app/reports", bearer)
    assert refused.status == 401
    assert b"token_revoked" in refused.body


def _live_token(gate: Gate) -> tuple[str, str]:
    """A token minted through the admin API: (token, jti)."""
    bearer = {"Authorization": f"Bearer {gate.admin_token()}"}
    minted = http(
        "POST",
        gate.url + "/admin/tokens",
        headers=bearer,
        json_body={"sub": "svc-target", "scope": "read", "ttl_seconds": 600},
    ).json()
    return minted["access_token"], minted["jti"]


@pytest.mark.parametrize("forgery", ["wrong", "missing"])
def test_a_form_with_a_wrong_or_missing_csrf_token_is_refused(
    browser: webdriver.Chrome, gate: Gate, forgery: str
) -> None:
    """The revoke form with its CSRF token altered or removed: 403, the token still passes."""
    token, jti = _live_token(gate)
    sign_in(browser, gate, OPERATOR, OPERATOR_PASSWORD)
    browser.get(gate.console + "/tokens")
    form = browser.find_element(By.CSS_SELECTOR, 'form[data-test="revoke-token"]')
    form.find_element(By.NAME, "jti").send_keys(jti)
    csrf = form.find_element(By.NAME, "csrf")
    if forgery == "wrong":
        browser.execute_script("arguments[0].value = 'A' + arguments[0].value.slice(1)", csrf)
    else:
        browser.execute_script("arguments[0].remove()", csrf)
    submit(browser, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    assert alert_code(browser) == "csrf_refused"
    assert gate.auth("/app/x", {"Authorization": f"Bearer {token}"}).status == 200


@pytest.mark.parametrize(
    ("host", "refusal"),
    [
        # Another port of the same host: the same site, so the SameSite=Strict cookie goes
        # along; the browser's Origin gives the page away.
        ("127.0.0.1", "posted from another origin"),
        # Another site (the SameSite=Strict cookie stays home too): the Origin is checked first.
        ("localhost", "posted from another origin"),
    ],
    ids=["same-site-other-origin", "cross-site"],
)
def test_a_form_posted_from_another_origin_is_refused(
    browser: webdriver.Chrome, gate: Gate, tmp_path: Path, host: str, refusal: str
) -> None:
    """A page elsewhere posts the revoke form, even with a valid CSRF token (say it leaked):
    403, and the token still passes."""
    token, jti = _live_token(gate)
    sign_in(browser, gate, OPERATOR, OPERATOR_PASSWORD)
    browser.get(gate.console + "/tokens")
    csrf = browser.find_element(By.NAME, "csrf").get_attribute("value")
    (tmp_path / "attack.html").write_text(
        "<!doctype html><form id=f method=post "
        f'action="{gate.console}/tokens/revoke">'
        f'<input name=csrf value="{csrf}"><input name=jti value="{jti}"></form>'
        "<script>document.getElementById('f').submit()</script>"
    )

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    attacker = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=attacker.serve_forever, daemon=True)
    thread.start()
    try:
        browser.get(f"http://{host}:{attacker.server_address[1]}/attack.html")
        WebDriverWait(browser, 10).until(lambda b: b.current_url.startswith(gate.console))
        assert alert_code(browser) == "csrf_refused"
        assert refusal in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    finally:
        attacker.shutdown()
        attacker.server_close()
    assert gate.auth("/app/x", {"Authorization": f"Bearer {token}"}).status == 200


def test_api_keys_signing_keys_decisions_and_readiness(
    browser: webdriver.Chrome, gate: Gate, shots: Path
) -> None:
    """The other pages: an API key created (shown once) then revoked; the signing keys;
    the decisions made above with counts by reason; readiness all ok with the config
    generation; the operator audit naming the operator of each change."""
    sign_in(browser, gate, OPERATOR, OPERATOR_PASSWORD)
    browser.get(gate.console + "/apikeys")
    form = browser.find_element(By.CSS_SELECTOR, 'form[data-test="create-apikey"]')
    form.find_element(By.NAME, "name").send_keys("nightly-export")
    form.find_element(By.NAME, "scopes").send_keys("read")
    submit(browser, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    secret = browser.find_element(By.CSS_SELECTOR, '[data-test="secret"]').get_attribute("value")
    parsed = parse_raw_key(secret or "")
    assert parsed is not None
    assert parsed[0] in browser.find_element(By.CSS_SELECTOR, 'table[aria-label="API keys"]').text
    browser.save_screenshot(str(shots / "apikeys.png"))
    revoke = browser.find_element(By.CSS_SELECTOR, '[data-test^="revoke-"]')
    click_and_confirm(browser, revoke)
    WebDriverWait(browser, 5).until(
        lambda b: b.find_element(By.CSS_SELECTOR, "[role=status]").text == "API key revoked."
    )
    browser.get(gate.console + "/keys")
    assert "ES256" in browser.find_element(By.TAG_NAME, "table").text
    browser.save_screenshot(str(shots / "signing-keys.png"))
    browser.get(gate.console + "/decisions")
    reasons = {e.text for e in browser.find_elements(By.CSS_SELECTOR, '[data-test="reason"]')}
    assert {"ok", "pair_pending", "token_revoked"} <= reasons
    counts = browser.find_element(By.CSS_SELECTOR, 'table[aria-label="Counts by reason"]').text
    assert "token_revoked" in counts
    browser.save_screenshot(str(shots / "decisions.png"))
    browser.get(gate.console + "/ready")
    readiness = browser.find_element(By.TAG_NAME, "table").text
    assert "stores ok" in readiness
    assert "signing_keys ok" in readiness
    assert "event_bus ok" in readiness
    generation = browser.find_element(By.CSS_SELECTOR, '[data-test="config-generation"]')
    assert generation.text == "1"
    browser.save_screenshot(str(shots / "readiness.png"))
    browser.get(gate.console + "/audit")
    audit = browser.find_element(By.CSS_SELECTOR, 'table[aria-label="Operator audit"]').text
    assert f"apikey.revoke admin:{OPERATOR} key_id={parsed[0]}" in audit
    assert f"apikey.create admin:{OPERATOR} key_id={parsed[0]} name=nightly-export" in audit
    assert (secret or "-") not in audit
    browser.save_screenshot(str(shots / "audit.png"))


def test_no_page_breaks_the_content_security_policy(browser: webdriver.Chrome, gate: Gate) -> None:
    """Every page loads its script and style under the CSP: no violation is reported, and
    the served HTML has no inline script, no inline style and nothing from elsewhere."""
    sign_in(browser, gate, OPERATOR, OPERATOR_PASSWORD)
    browser_log(browser)  # drop what earlier tests logged
    for page in ("", "pairs", "tokens", "apikeys", "keys", "decisions", "audit", "ready"):
        browser.get(f"{gate.console}/{page}")
        assert browser.execute_script("return document.styleSheets.length") == 1
        scripts = browser.find_elements(By.TAG_NAME, "script")
        assert scripts and all(s.get_attribute("src") for s in scripts)
        assert browser.find_elements(By.CSS_SELECTOR, "[style], style") == []
    violations = [m for m in browser_log(browser) if "Content Security Policy" in m["message"]]
    assert violations == []
