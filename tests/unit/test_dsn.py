"""DSNs: passwords never shown (:func:`pgbridge.dsn.redact_dsn`, what every message naming a DSN
goes through), and libpq's ``connect_timeout`` taken out for asyncpg
(:func:`~pgbridge.dsn.take_connect_timeout`)."""

from __future__ import annotations

import pytest

from pgbridge.dsn import redact_dsn, take_connect_timeout


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://app:hunter2@127.0.0.1:5999/db", "postgresql://app:***@127.0.0.1:5999/db"),
        (
            "postgres://app:hunter2@db.example/app?sslmode=require",
            "postgres://app:***@db.example/app?sslmode=require",
        ),
        # percent-encoded: neither the encoded nor the decoded password is left
        ("postgresql://app:hun%40ter%2F2@host/db", "postgresql://app:***@host/db"),
        # unencoded '@', '/', '?', '#' in the password: everything up to the last '@' is userinfo
        ("postgresql://app:hu@n/t?e#r2@host:5432/db", "postgresql://app:***@host:5432/db"),
        # several hosts
        (
            "postgresql://app:hunter2@h1:5432,h2:5433/db?target_session_attrs=read-write",
            "postgresql://app:***@h1:5432,h2:5433/db?target_session_attrs=read-write",
        ),
        # the password as a query parameter (also sslpassword), anywhere in the query
        ("postgresql://app@host/db?password=hunter2", "postgresql://app@host/db?password=***"),
        (
            "postgresql:///db?host=/tmp&password=hunter2&sslmode=disable",
            "postgresql:///db?host=/tmp&password=***&sslmode=disable",
        ),
        ("postgresql://host/db?sslpassword=hunter2", "postgresql://host/db?sslpassword=***"),
        ("postgresql://app:x@host/db?PASSWORD=hunter2", "postgresql://app:***@host/db?PASSWORD=***"),
        # libpq key=value strings
        (
            "host=127.0.0.1 user=app password=hunter2 dbname=db",
            "host=127.0.0.1 user=app password=*** dbname=db",
        ),
        ("host=h password = 'hun ter\\'2' dbname=db", "host=h password = *** dbname=db"),
    ],
)
def test_a_password_is_replaced_wherever_the_dsn_holds_it(dsn: str, shown: str) -> None:
    assert redact_dsn(dsn) == shown
    assert "hunter2" not in redact_dsn(dsn)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://postgres@127.0.0.1:5432/postgres",
        "postgresql:///postgres?host=/tmp/pgdata",
        "postgresql://postgres:@/postgres?host=/tmp/pgdata",  # the embedded server's: no password
        "postgresql://app@h1,h2/db",
        "host=localhost dbname=db",
        "",
    ],
)
def test_a_dsn_without_a_password_is_shown_as_it_is(dsn: str) -> None:
    assert redact_dsn(dsn) == dsn


# -- libpq's connect_timeout, which asyncpg does not accept --------------------------------


@pytest.mark.parametrize(
    ("dsn", "kept", "seconds"),
    [
        ("postgresql://app@db/x?connect_timeout=2", "postgresql://app@db/x", 2.0),
        (
            "postgresql://app@db/x?sslmode=disable&connect_timeout=2.5&application_name=w",
            "postgresql://app@db/x?sslmode=disable&application_name=w",
            2.5,
        ),
        ("postgresql://app@/x?host=/tmp&connect_timeout=1", "postgresql://app@/x?host=/tmp", 1.0),
        ("postgresql://app:pa?ss@db/x?connect_timeout=3", "postgresql://app:pa?ss@db/x", 3.0),
    ],
)
def test_connect_timeout_is_taken_out_of_the_dsn_with_its_value(dsn: str, kept: str, seconds: float) -> None:
    assert take_connect_timeout(dsn) == (kept, seconds)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://app@db/x",
        "postgresql://app@db/x?sslmode=disable",
        "postgresql://app:connect_timeout=2@db/x",  # in the password, not the query
        "host=db connect_timeout=2",  # a key=value string: asyncpg takes URIs only
    ],
)
def test_a_dsn_without_connect_timeout_in_its_query_is_left_as_it_is(dsn: str) -> None:
    assert take_connect_timeout(dsn) == (dsn, None)


@pytest.mark.parametrize("value", ["0", "-1", "soon", "", "inf", "nan"])
def test_a_connect_timeout_that_is_not_a_positive_number_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match=f"connect_timeout in the DSN must be a positive number.*{value!r}"):
        take_connect_timeout(f"postgresql://app@db/x?connect_timeout={value}")
