"""Sign-in throttling: five failures for a name, or thirty from an address, in 15 minutes
refuse further sign-ins (429 with Retry-After) before any password is checked."""

from __future__ import annotations

import pytest

from notifier.console.throttle import ADDRESS_LIMIT, KEY_PREFIX, NAME_LIMIT, SignInThrottle
from tests.console.conftest import NAME, PASSWORD
from tests.console.test_routes import audited, clocked_console, csrf_in, sign_in


def test_the_documented_limits():
    assert (NAME_LIMIT.amount, NAME_LIMIT.get_expiry()) == (5, 900)
    assert (ADDRESS_LIMIT.amount, ADDRESS_LIMIT.get_expiry()) == (30, 900)


def test_five_failures_for_a_name_refuse_it_even_with_the_right_password(
        client, redis_client):
    for _ in range(5):
        assert sign_in(client, password="wrong password!").status_code == 401
    refused = sign_in(client)
    assert refused.status_code == 429
    assert "Too many failed sign-ins for this name: try again in 15 minutes." in refused.text
    assert 0 < int(refused.headers["retry-after"]) <= 900
    assert "__Host-notifier-console=" not in refused.headers.get("set-cookie", "")
    assert client.get("/console/").status_code == 401
    assert audited(redis_client)[-1] == ("", "login-throttled", NAME)
    keys = redis_client.keys(KEY_PREFIX + ":*")
    assert keys and all(0 < redis_client.ttl(k) <= 900 for k in keys)
    # Another operator name from the same address may still try.
    assert sign_in(client, name="bo", password="whatever it is").status_code == 401


def test_a_good_sign_in_forgets_the_names_failures(client):
    for _ in range(4):
        assert sign_in(client, password="wrong password!").status_code == 401
    assert sign_in(client).status_code == 303
    client.cookies.clear()
    for _ in range(4):
        assert sign_in(client, password="wrong password!").status_code == 401
    assert sign_in(client, name=NAME, password=PASSWORD).status_code == 303


def test_thirty_failures_from_one_address_refuse_every_name_from_it(client, redis_client):
    for n in range(3):
        assert sign_in(client, name=f"guess{n}", password="x" * 12).status_code == 401
    # 27 more from the test client's address, counted as the sign-in counts them (an
    # unknown name's check costs a full argon2 hash: 27 of them would take 9 s).
    throttle = SignInThrottle(redis_client)
    for n in range(3, 30):
        assert throttle.attempt(f"guess{n}", "testclient") is None
    refused = sign_in(client)
    assert refused.status_code == 429
    assert "for this address" in refused.text
    assert audited(redis_client)[-1] == ("", "login-throttled", NAME)


def test_at_most_two_password_checks_run_at_once(settings, redis_client, monkeypatch):
    """Six sign-ins at once: the argon2 checks (64 MiB each) run two at a time. The real
    check runs, wrapped to count how many are under way."""
    import asyncio
    import threading

    import httpx

    from notifier.console import routes
    from notifier.console.throttle import VERIFY_SLOTS

    real = routes.verify_password
    running, peak, lock = [0], [0], threading.Lock()

    def counted(*args: object) -> object:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            return real(*args)  # type: ignore[arg-type]
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(routes, "verify_password", counted)
    app, _ = clocked_console(settings, redis_client, 600)

    async def six_at_once() -> list[int]:
        transport = httpx.ASGITransport(app=app)

        async def attempt(n: int) -> int:
            # A client each: each sign-in form has its own CSRF cookie.
            async with httpx.AsyncClient(transport=transport,
                                         base_url="https://testserver") as http:
                form = await http.get("/console/login")
                answer = await http.post("/console/login", data={
                    "csrf_token": csrf_in(form.text), "name": f"someone{n}",
                    "password": "not the password"})
                return answer.status_code

        return list(await asyncio.gather(*(attempt(n) for n in range(6))))

    assert asyncio.run(six_at_once()) == [401] * 6
    assert peak[0] == VERIFY_SLOTS == 2


def test_sign_ins_sent_at_once_for_one_name_are_counted_before_any_check(client):
    """Twelve wrong passwords for one name at the same moment: each is counted before its
    password is checked, so five are checked and the others refused."""
    from concurrent.futures import ThreadPoolExecutor

    forms = []
    for _ in range(12):
        form = client.get("/console/login")
        forms.append((csrf_in(form.text), dict(client.cookies)))
        client.cookies.clear()

    def attempt(form: tuple[str, dict[str, str]]) -> int:
        token, cookies = form
        header = "; ".join(f"{k}={v}" for k, v in cookies.items())
        return int(client.post("/console/login", headers={"cookie": header},
                               follow_redirects=False, data={
                                   "csrf_token": token, "name": NAME,
                                   "password": "not the password"}).status_code)

    with ThreadPoolExecutor(len(forms)) as pool:
        answers = sorted(pool.map(attempt, forms))
    assert answers == [401] * 5 + [429] * 7


def test_the_name_tried_is_kept_in_redis_only_as_a_digest(client, redis_client):
    typed = "Tr0ub4dor&3-typed-in-the-name-field"
    assert sign_in(client, name=typed, password="whatever it is").status_code == 401
    keys = [k.decode() for k in redis_client.keys(KEY_PREFIX + ":*")]
    assert len(keys) == 2 and not any(typed in k for k in keys)
    assert not any(typed in str(entry) for entry in audited(redis_client))


def test_without_redis_a_sign_in_is_store_unavailable_not_a_redis_error():
    """The app answers StoreUnavailable 503 (`web.failures`); a redis-py error would be a
    500 with a traceback."""
    from notifier.console.throttle import SignInThrottle as Throttle
    from notifier.errors import StoreUnavailable
    from tests.web.test_app import down_redis

    throttle = Throttle(down_redis())
    with pytest.raises(StoreUnavailable):
        throttle.attempt(NAME, "testclient")
    with pytest.raises(StoreUnavailable):
        throttle.succeeded(NAME)


def test_without_redis_the_console_answers_a_page_and_the_api_its_json(settings):
    """A browser is shown a page it can read (503, Retry-After, the console's headers, no
    navigation), not the API's JSON error; the API keeps its JSON."""
    from fastapi.testclient import TestClient

    from tests.web.test_app import down_app

    with TestClient(down_app(settings), base_url="https://testserver") as down:
        form = down.get("/console/login")  # the form itself needs no Redis
        answer = down.post("/console/login", follow_redirects=False, data={
            "csrf_token": csrf_in(form.text), "name": NAME, "password": PASSWORD})
        api = down.get("/healthz")
    assert answer.status_code == 503
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["retry-after"] == api.headers["retry-after"]
    assert answer.headers["content-security-policy"].startswith("default-src 'self'")
    assert "Try again in a moment" in answer.text and "Nothing was changed" in answer.text
    assert "Sign out" not in answer.text
    assert api.status_code == 503 and api.headers["content-type"] == "application/json"
