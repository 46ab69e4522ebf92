import hashlib
import re

import pytest

from services.permission import tokens
from services.permission.tokens import (
    TokenKind,
    bearer,
    hash_secret,
    mint,
    parse,
    verify,
)


def test_token_kinds():
    assert [k.value for k in TokenKind] == ["user", "strategy", "admin", "service"]
    assert TokenKind("admin") is TokenKind.ADMIN
    assert isinstance(TokenKind.USER, str) and TokenKind.USER == "user"


def test_mint_shape_and_hash():
    token, token_id, secret_hash = mint()
    assert re.fullmatch(r"[0-9a-f]{12}", token_id)
    assert token.startswith(f"nija_{token_id}_")
    secret = token[len(f"nija_{token_id}_"):]
    assert len(secret) == 43 and len(token) == 61
    assert secret_hash == hashlib.sha256(secret.encode()).hexdigest() == hash_secret(secret)
    assert secret not in secret_hash


def test_mint_is_unique():
    minted = [mint() for _ in range(200)]
    assert len({t for t, _, _ in minted}) == 200
    assert len({i for _, i, _ in minted}) == 200


def test_parse_round_trip_many():
    # token_urlsafe emits '_' and '-' often enough that 500 tokens cover secrets starting/containing them.
    for _ in range(500):
        token, token_id, secret_hash = mint()
        parsed = parse(token)
        assert parsed is not None
        assert parsed[0] == token_id
        assert verify(parsed[1], secret_hash)


def test_parse_secret_with_underscores_and_dashes():
    secret = "_" + "a_b-" * 10 + "__"
    assert len(secret) == 43
    assert parse(f"nija_0123456789ab_{secret}") == ("0123456789ab", secret)


GOOD_ID = "0123456789ab"
GOOD_SECRET = "A" * 43


@pytest.mark.parametrize(
    "token",
    [
        None,
        b"nija_0123456789ab_" + b"A" * 43,
        42,
        "",
        "nija_",
        "nija__",
        f"NIJA_{GOOD_ID}_{GOOD_SECRET}",
        f"nija-{GOOD_ID}_{GOOD_SECRET}",
        f"xnija_{GOOD_ID}_{GOOD_SECRET}",
        f"nija_{GOOD_ID.upper()}_{GOOD_SECRET}",
        f"nija_0123456789a_{GOOD_SECRET}",
        f"nija_0123456789abc_{GOOD_SECRET}",
        f"nija_0123456789ag_{GOOD_SECRET}",
        f"nija_{GOOD_ID}{GOOD_SECRET}",
        f"nija_{GOOD_ID}_",
        f"nija_{GOOD_ID}_{GOOD_SECRET[:-1]}",
        f"nija_{GOOD_ID}_{GOOD_SECRET}A",
        f"nija_{GOOD_ID}_{GOOD_SECRET[:-1]}=",
        f"nija_{GOOD_ID}_{GOOD_SECRET[:-1]}+",
        f"nija_{GOOD_ID}_{GOOD_SECRET[:-1]}é",
        f"nija_{GOOD_ID}_{GOOD_SECRET[:-1]}\u0661",
        f"nija_{GOOD_ID}_{GOOD_SECRET}\n",
        f" nija_{GOOD_ID}_{GOOD_SECRET}",
        f"nija_{GOOD_ID}_{GOOD_SECRET[:20]} {GOOD_SECRET[:22]}",
        f"nija_{GOOD_ID}_{GOOD_SECRET}" + "A" * 1_000_000,
        "nija_" + "_" * 300,
    ],
)
def test_parse_rejects_malformed(token):
    assert parse(token) is None


def test_parse_accepts_exact_shape():
    assert parse(f"nija_{GOOD_ID}_{GOOD_SECRET}") == (GOOD_ID, GOOD_SECRET)
    assert tokens.MAX_TOKEN_CHARS >= 61


def test_verify():
    token, _, secret_hash = mint()
    _, secret = parse(token)
    assert verify(secret, secret_hash)
    assert not verify(secret[:-1] + ("B" if secret[-1] != "B" else "C"), secret_hash)
    assert not verify(secret, secret_hash.upper())
    assert not verify(secret, "")
    assert not verify("", secret_hash)
    assert not verify(secret, secret_hash[:-1] + "é")
    assert not verify("é", secret_hash)
    assert not verify(None, secret_hash)  # type: ignore[arg-type]
    assert not verify(secret, None)  # type: ignore[arg-type]


def test_verify_uses_compare_digest(monkeypatch):
    calls = []
    real = tokens.hmac.compare_digest
    monkeypatch.setattr(tokens.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    verify("x", hash_secret("x"))
    assert calls == [(hash_secret("x"), hash_secret("x"))]


TOKEN = f"nija_{GOOD_ID}_{GOOD_SECRET}"


@pytest.mark.parametrize(
    "value",
    [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER {TOKEN}", f"  Bearer   {TOKEN}  ", f"Bearer\t{TOKEN}",
     f"Bearer {TOKEN}".encode()],
)
def test_bearer_extracts_token(value):
    assert bearer(value) == TOKEN


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "Bearer", "Bearer ", TOKEN, f"Basic {TOKEN}", f"Bearer{TOKEN}", f"Bearer {TOKEN} extra",
     f"Token {TOKEN}", "Bearer \u00e9".encode("latin-1"), 42],
)
def test_bearer_rejects(value):
    assert bearer(value) is None
