"""Sign-in throttling: five failures for a name, or thirty from an address, in 15 minutes
refuse further sign-ins (429 with Retry-After) before any password is checked."""

from __future__ import annotations

from notifier.console.throttle import ADDRESS_LIMIT, KEY_PREFIX, NAME_LIMIT
from tests.console.conftest import NAME, PASSWORD
from tests.console.test_routes import audited, sign_in


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
    for n in range(30):
        assert sign_in(client, name=f"guess{n}", password="x" * 12).status_code == 401
    refused = sign_in(client)
    assert refused.status_code == 429
    assert "for this address" in refused.text
    assert audited(redis_client)[-1] == ("", "login-throttled", NAME)
