"""Read tokens (pgbridge.tokens, docs/security.md): a token reads its one run until it expires,
and every other token (tampered, expired, another run's, another key's, malformed) reads nothing."""

from __future__ import annotations

import hmac
import re
import string
from datetime import timedelta
from pathlib import Path

import pytest

from pgbridge import PostgresStreamBridge
from pgbridge.exceptions import ConfigurationError, InvalidEventError
from pgbridge.tokens import (
    MAX_TOKEN_LENGTH,
    MAX_TTL_SECONDS,
    TOKEN_PATTERN,
    TokenKey,
    TokenKeyring,
    check_read_token,
    issue_read_token,
    ttl_seconds,
)

SECRET_1 = "k1-secret-" + "a" * 30
SECRET_2 = "k2-secret-" + "b" * 30
RING = TokenKeyring.parse(f"k1:{SECRET_1}")
NOW = 1_764_000_000.0
RUN = "agent/run 42"


def token_for(run_id: str = RUN, *, ring: TokenKeyring = RING, ttl: float = 600, now: float = NOW) -> str:
    return issue_read_token(ring, run_id, ttl, now=now)


# -- what a token grants -----------------------------------------------------------------


def test_a_token_reads_its_run_until_it_expires() -> None:
    token = token_for(ttl=600)
    assert check_read_token(RING, token, RUN, now=NOW) == NOW + 600
    assert check_read_token(RING, token, RUN, now=NOW + 599.9) == NOW + 600


def test_a_token_reads_nothing_from_its_expiry_on() -> None:
    token = token_for(ttl=600)
    assert check_read_token(RING, token, RUN, now=NOW + 600) is None
    assert check_read_token(RING, token, RUN, now=NOW + 86400) is None


@pytest.mark.parametrize("other", ["agent/run 43", "agent/run 4", "agent/run 42 ", "agent", "agent%2Frun 42"])
def test_a_token_does_not_read_another_run(other: str) -> None:
    assert check_read_token(RING, token_for(), other, now=NOW) is None


def test_changing_any_one_character_of_a_token_makes_it_read_nothing() -> None:
    token = token_for()
    alphabet = string.ascii_letters + string.digits + "-_."
    for position, original in enumerate(token):
        for replacement in {alphabet[(alphabet.index(original) + 1) % len(alphabet)], "0", "z"} - {original}:
            tampered = token[:position] + replacement + token[position + 1 :]
            assert check_read_token(RING, tampered, RUN, now=NOW) is None, (position, tampered)


def test_a_later_expiry_cannot_be_written_into_a_token() -> None:
    prefix, kid, expiry, mac = token_for(ttl=60).split(".")
    longer = ".".join([prefix, kid, str(int(expiry) + 3600), mac])
    assert check_read_token(RING, longer, RUN, now=NOW + 120) is None


def test_a_token_signed_with_a_key_the_server_does_not_have_reads_nothing() -> None:
    other_secret = TokenKeyring.parse(f"k1:{SECRET_2}")  # the same key id, another secret
    other_kid = TokenKeyring.parse(f"k9:{SECRET_1}")  # the same secret, another key id
    assert check_read_token(RING, token_for(ring=other_secret), RUN, now=NOW) is None
    assert check_read_token(RING, token_for(ring=other_kid), RUN, now=NOW) is None


def test_the_key_id_is_signed_too() -> None:
    """Relabelled to another key of the ring, a token reads nothing, even if both keys share a secret."""
    twins = TokenKeyring.parse(f"k1:{SECRET_1}\nk2:{SECRET_1}")
    relabelled = token_for(ring=twins).replace("pgb1.k1.", "pgb1.k2.")
    assert check_read_token(twins, relabelled, RUN, now=NOW) is None


def test_a_token_claiming_to_live_longer_than_any_token_may_reads_nothing() -> None:
    """A key holder cannot hand out an everlasting token: the expiry is bounded when checked."""
    far = token_for(ttl=MAX_TTL_SECONDS, now=NOW + 86400)  # issued by a clock a day ahead
    assert check_read_token(RING, far, RUN, now=NOW) is None
    assert check_read_token(RING, token_for(ttl=MAX_TTL_SECONDS), RUN, now=NOW) is not None


@pytest.mark.parametrize(
    "malformed",
    [
        "",
        "pgb1",
        "pgb1...",
        "pgb1.k1.1764000600.",
        "pgb2.k1.1764000600." + "A" * 43,
        "pgb1.k1.01764000600." + "A" * 43,  # a leading zero: not the signed text
        "pgb1.k1.-1764000600." + "A" * 43,
        "pgb1.k1.1764000600." + "A" * 44,
        "pgb1.k1.1764000600." + "A" * 42 + "=",
        "pgb1.k1.1764000600." + "A" * 42 + "é",
        "pgb1.k\u0131.1764000600." + "A" * 43,
        " pgb1.k1.1764000600." + "A" * 43,
        "x" * 10_000,
        None,
        42,
        b"pgb1.k1.1764000600." + b"A" * 43,
    ],
)
def test_malformed_input_reads_nothing_and_raises_nothing(malformed: object) -> None:
    assert check_read_token(RING, malformed, RUN, now=NOW) is None


def test_a_run_id_that_cannot_be_encoded_is_read_by_no_token() -> None:
    assert check_read_token(RING, token_for(), "bad \udc80 id", now=NOW) is None


def test_the_mac_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def recording(a: str, b: str) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    token = token_for()
    assert check_read_token(RING, token, RUN, now=NOW) is not None
    assert compared == [(token.rsplit(".", 1)[1], token.rsplit(".", 1)[1])]


# -- its form ------------------------------------------------------------------------------


def test_a_token_is_short_url_safe_text_that_does_not_carry_the_run_id() -> None:
    token = token_for("customer-7/secret-project")
    assert re.fullmatch(r"pgb1\.k1\.1764000600\.[A-Za-z0-9_-]{43}", token)
    assert len(token) <= MAX_TOKEN_LENGTH
    assert "customer" not in token and "secret" not in token
    assert TOKEN_PATTERN.search(f"GET /x?t={token}&y=1").group(0) == token  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("ttl", "seconds"),
    [(600, 600), (0.2, 1), (59.5, 60), (timedelta(minutes=10), 600), (MAX_TTL_SECONDS, MAX_TTL_SECONDS)],
)
def test_a_ttl_is_whole_seconds_rounded_up(ttl: float | timedelta, seconds: int) -> None:
    assert ttl_seconds(ttl) == seconds


@pytest.mark.parametrize(
    "ttl", [0, -1, MAX_TTL_SECONDS + 1, float("nan"), float("inf"), True, "600", None, timedelta(0)]
)
def test_a_bad_ttl_is_refused(ttl: object) -> None:
    with pytest.raises(InvalidEventError, match="ttl"):
        issue_read_token(RING, RUN, ttl, now=NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize("run_id", ["", "x" * 256, "nul\x00", 42])
def test_no_token_is_issued_for_a_bad_run_id(run_id: object) -> None:
    with pytest.raises(InvalidEventError, match="run_id"):
        issue_read_token(RING, run_id, 600, now=NOW)  # type: ignore[arg-type]


# -- keys and rotation ---------------------------------------------------------------------


def test_the_first_key_signs_and_both_keys_verify_during_a_rotation() -> None:
    before = TokenKeyring.parse(f"k1:{SECRET_1}")
    during = TokenKeyring.parse(f"k2:{SECRET_2}\nk1:{SECRET_1}")
    after = TokenKeyring.parse(f"k2:{SECRET_2}")
    old, new = token_for(ring=before), token_for(ring=during)
    assert new.startswith("pgb1.k2.")
    assert check_read_token(during, old, RUN, now=NOW) is not None
    assert check_read_token(during, new, RUN, now=NOW) is not None
    assert check_read_token(after, new, RUN, now=NOW) is not None
    assert check_read_token(after, old, RUN, now=NOW) is None  # the retired key's tokens end


def test_keys_parse_from_lines_or_commas_with_comments_and_blank_lines() -> None:
    text = f"# rotated 2025-01-02\n\n  k2:{SECRET_2}  \nk1:{SECRET_1}\n"
    assert TokenKeyring.parse(text).kids == ("k2", "k1")
    assert TokenKeyring.parse(f"k2:{SECRET_2},k1:{SECRET_1}").kids == ("k2", "k1")
    colons = TokenKeyring.parse(f"k1:{SECRET_1}:with:colons")
    assert colons.signing.secret == f"{SECRET_1}:with:colons".encode()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "hold no key"),
        ("# only a comment\n", "hold no key"),
        (SECRET_1, "line 1: expected kid:secret"),
        (f"k1:{SECRET_1}\nk2:{SECRET_2}\nk3:{SECRET_2}x", "one or two token keys"),
        (f"k1:{SECRET_1}\nk1:{SECRET_2}", "share the id 'k1'"),
        (f"bad kid:{SECRET_1}", "line 1: a key id is"),
        (f"k1:{SECRET_1}\n{'k' * 33}:{SECRET_2}", "line 2: a key id is"),
        ("k1:short-secret", "at least 32 characters"),
        (f"k1:{SECRET_1[:10]} {SECRET_1[10:]}", "printable ASCII"),
        (f"k1:{SECRET_1}é", "printable ASCII"),
    ],
)
def test_bad_key_text_is_refused_naming_the_line_and_never_the_secret(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)) as refused:
        TokenKeyring.parse(text)
    for secret in (SECRET_1, SECRET_2, "short-secret"):
        assert secret not in str(refused.value)


def test_no_repr_shows_a_secret() -> None:
    ring = TokenKeyring.parse(f"k2:{SECRET_2}\nk1:{SECRET_1}")
    bridge = PostgresStreamBridge("postgresql://nowhere/x", token_secrets=ring)
    shown = " ".join([repr(ring), repr(ring.keys), str(ring), repr(bridge.options)])
    assert "k2" in repr(ring) and SECRET_1 not in shown and SECRET_2 not in shown
    from_text = PostgresStreamBridge("postgresql://x/y", token_secrets=f"k1:{SECRET_1}")
    assert SECRET_1[:12] not in repr(from_text.options)


def test_keys_read_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"k2:{SECRET_2}\nk1:{SECRET_1}\n")
    assert TokenKeyring.from_file(path).kids == ("k2", "k1")
    with pytest.raises(ConfigurationError, match="cannot read the token secret file"):
        TokenKeyring.from_file(tmp_path / "missing")
    path.write_text("k1:short")
    with pytest.raises(ConfigurationError, match=r"token secret file .*keys'.*line 1"):
        TokenKeyring.from_file(path)


def test_a_key_is_checked_when_made_directly() -> None:
    with pytest.raises(ConfigurationError, match="at least 32"):
        TokenKey("k1", b"short")
    with pytest.raises(ConfigurationError, match="key id"):
        TokenKey("k 1", SECRET_1.encode())


# -- the bridge ----------------------------------------------------------------------------


def test_the_bridge_issues_tokens_before_it_is_started_with_no_database() -> None:
    bridge = PostgresStreamBridge("postgresql://nowhere.invalid/x", token_secrets=f"k1:{SECRET_1}")
    token = bridge.read_token(RUN, ttl=timedelta(minutes=5))
    assert bridge.token_keyring is not None
    expires_at = check_read_token(bridge.token_keyring, token, RUN)
    assert expires_at is not None
    assert check_read_token(RING, token, RUN) == expires_at  # the same key verifies it anywhere


def test_a_bridge_without_keys_says_how_to_give_them() -> None:
    bridge = PostgresStreamBridge("postgresql://nowhere.invalid/x")
    assert bridge.token_keyring is None
    with pytest.raises(ConfigurationError, match="token_secrets"):
        bridge.read_token(RUN)


@pytest.mark.parametrize("secrets", ["k1:short", "", 42])
def test_a_bridge_refuses_bad_token_secrets_when_made(secrets: object) -> None:
    with pytest.raises(ConfigurationError):
        PostgresStreamBridge("postgresql://nowhere.invalid/x", token_secrets=secrets)
