import base64
import os
import stat
import traceback
import types
from pathlib import Path

import pytest

from services.permission.keyring import (
    ApiCredentials,
    Keyring,
    SealedSecret,
    SecretError,
    add_master_key,
    generate_master_key,
    load_keyring,
    next_key_id,
    read_key_file,
    reseal,
    seal,
    unseal,
)
from tests.vault_emulator import VaultEmulator

AAD = b"alice|coinbase"
CREDS = ApiCredentials("AKIA-visible-key", "s3cr3t-api-secret-value", "pass-phrase-value")


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def text_of(exc: BaseException) -> str:
    """Everything an exception could print: message, repr and the whole chained traceback."""
    return str(exc) + repr(exc) + "".join(traceback.format_exception(exc))


@pytest.fixture
def ring() -> Keyring:
    return Keyring("k1", {"k1": generate_master_key()})


def private_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


# -- ApiCredentials ----------------------------------------------------------------------------------


def test_credentials_round_trip_through_bytes():
    assert ApiCredentials.from_bytes(CREDS.to_bytes()) == CREDS
    assert ApiCredentials.from_bytes(ApiCredentials("k", "s").to_bytes()).passphrase == ""


def test_credentials_repr_and_str_are_redacted():
    for shown in (repr(CREDS), str(CREDS), f"{CREDS}", f"{CREDS!r}", repr([CREDS]), repr({"c": CREDS})):
        assert "<redacted>" in shown
        for value in (CREDS.api_key, CREDS.api_secret, CREDS.passphrase):
            assert value not in shown


def test_credentials_are_frozen_and_typed():
    with pytest.raises(AttributeError):
        CREDS.api_key = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ApiCredentials(b"bytes", "s")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data", [b"", b"not json", b"[]", b'{"api_key": "only-key"}', b'{"api_key": 1, "api_secret": "x"}']
)
def test_credentials_from_bad_bytes_raise_secret_error_without_echo(data):
    with pytest.raises(SecretError) as info:
        ApiCredentials.from_bytes(data)
    assert "only-key" not in text_of(info.value)


# -- Keyring -----------------------------------------------------------------------------------------


def test_keyring_validates():
    key = generate_master_key()
    assert len(key) == 32 and key != generate_master_key()
    with pytest.raises(SecretError, match="32 bytes"):
        Keyring("k1", {"k1": key[:16]})
    with pytest.raises(SecretError, match="not in the keyring"):
        Keyring("k2", {"k1": key})
    with pytest.raises(SecretError, match="key id"):
        Keyring("bad id", {"bad id": key})
    with pytest.raises(SecretError, match="key id"):
        Keyring("k" * 33, {"k" * 33: key})
    with pytest.raises(SecretError):
        Keyring("k1", {"k1": b64(key)})  # type: ignore[dict-item]


def test_keyring_repr_shows_ids_only(ring):
    assert repr(ring) == "Keyring(active_id='k1', ids=('k1',))"
    assert b64(ring.key("k1")) not in repr(ring)
    assert "k1" in ring and "k9" not in ring


# -- seal / unseal -----------------------------------------------------------------------------------


def test_seal_round_trip(ring):
    sealed = seal(ring, CREDS.to_bytes(), AAD)
    assert isinstance(sealed, SealedSecret)
    assert sealed.key_id == "k1"
    assert len(sealed.blob) == 12 + len(CREDS.to_bytes()) + 16
    assert CREDS.api_secret.encode() not in sealed.blob
    assert ApiCredentials.from_bytes(unseal(ring, sealed, AAD)) == CREDS


def test_seal_uses_a_fresh_nonce_each_time(ring):
    a, b = seal(ring, b"same", AAD), seal(ring, b"same", AAD)
    assert a.blob[:12] != b.blob[:12] and a.blob != b.blob


def test_sealed_secret_repr_hides_blob(ring):
    sealed = seal(ring, b"x", AAD)
    assert repr(sealed) == "SealedSecret(key_id='k1')"
    assert sealed.blob.hex() not in repr(sealed)


def _failures(ring: Keyring, sealed: SealedSecret):
    other = Keyring("k1", {"k1": generate_master_key()})
    flipped = bytearray(sealed.blob)
    flipped[-1] ^= 1
    nonce_flipped = bytearray(sealed.blob)
    nonce_flipped[0] ^= 1
    return {
        "wrong aad (another user)": (ring, sealed, b"bob|coinbase"),
        "wrong aad (another broker)": (ring, sealed, b"alice|kraken"),
        "wrong key": (other, sealed, AAD),
        "tampered tag": (ring, SealedSecret("k1", bytes(flipped)), AAD),
        "tampered nonce": (ring, SealedSecret("k1", bytes(nonce_flipped)), AAD),
        "truncated": (ring, SealedSecret("k1", sealed.blob[:20]), AAD),
        # The store never holds an empty blob (SealedSecret refuses one); a damaged row could.
        "empty": (ring, types.SimpleNamespace(key_id="k1", blob=b""), AAD),
        "unknown key id": (ring, SealedSecret("k7", sealed.blob), AAD),
    }


@pytest.mark.parametrize(
    "case",
    ["wrong aad (another user)", "wrong aad (another broker)", "wrong key", "tampered tag", "tampered nonce",
     "truncated", "empty", "unknown key id"],
)
def test_unseal_failures_raise_secret_error_without_secrets(ring, case):
    sealed = seal(ring, CREDS.to_bytes(), AAD)
    keyring, bad, aad = _failures(ring, sealed)[case]
    with pytest.raises(SecretError) as info:
        unseal(keyring, bad, aad)
    shown = text_of(info.value)
    for secret in (CREDS.api_key, CREDS.api_secret, CREDS.passphrase, b64(ring.key("k1")), ring.key("k1").hex()):
        assert secret not in shown


# -- sources -----------------------------------------------------------------------------------------


def test_no_source_is_an_error():
    with pytest.raises(SecretError, match="no master key configured"):
        load_keyring({})


def test_env_keys_first_is_active():
    k1, k2 = generate_master_key(), generate_master_key()
    ring = load_keyring({"NIJA_MASTER_KEYS": f"k2:{b64(k2)}, k1:{b64(k1)}"})
    assert ring.active_id == "k2" and ring.ids == ("k2", "k1")
    assert ring.key("k1") == k1 and ring.key("k2") == k2


def test_env_keys_accept_urlsafe_base64():
    key = generate_master_key()
    ring = load_keyring({"NIJA_MASTER_KEYS": f"k1:{base64.urlsafe_b64encode(key).decode()}"})
    assert ring.key("k1") == key


@pytest.mark.parametrize(
    "value, message",
    [
        ("k1", "not 'id:base64key'"),
        ("k1:!!notbase64!!", "not valid base64"),
        (f"k1:{b64(b'short')}", "32 bytes"),
        (f"bad id:{b64(bytes(32))}", "key id"),
        (f"k1:{b64(bytes(32))},k1:{b64(bytes(32))}", "twice"),
        (",", "no master keys"),
    ],
)
def test_env_keys_errors(value, message):
    with pytest.raises(SecretError, match=message) as info:
        load_keyring({"NIJA_MASTER_KEYS": value})
    assert "notbase64" not in text_of(info.value)


def test_key_file(tmp_path):
    k1, k2 = generate_master_key(), generate_master_key()
    path = private_file(tmp_path / "keys", f"# comment\n\nk2 {b64(k2)}\n  k1   {b64(k1)}  \n")
    ring = load_keyring({"NIJA_MASTER_KEY_FILE": str(path)})
    assert ring.active_id == "k2" and ring.ids == ("k2", "k1") and ring.key("k1") == k1


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666])
def test_key_file_readable_by_others_is_refused(tmp_path, mode):
    path = private_file(tmp_path / "keys", f"k1 {b64(generate_master_key())}\n", mode)
    with pytest.raises(SecretError, match="0600 or stricter") as info:
        load_keyring({"NIJA_MASTER_KEY_FILE": str(path)})
    assert b64(generate_master_key()) not in str(info.value)


def test_key_file_0400_is_fine(tmp_path):
    path = private_file(tmp_path / "keys", f"k1 {b64(generate_master_key())}\n", 0o400)
    assert read_key_file(str(path)).active_id == "k1"


def test_key_file_errors(tmp_path):
    key_text = b64(generate_master_key())
    with pytest.raises(SecretError, match="cannot open"):
        load_keyring({"NIJA_MASTER_KEY_FILE": str(tmp_path / "missing")})
    bad = private_file(tmp_path / "bad", f"k1 {key_text} extra\n")
    with pytest.raises(SecretError, match=r"bad:1: expected") as info:
        read_key_file(str(bad))
    assert key_text not in str(info.value)
    with pytest.raises(SecretError, match="no master keys"):
        read_key_file(str(private_file(tmp_path / "empty", "# nothing\n")))
    with pytest.raises(SecretError, match="not a regular file"):
        read_key_file(str(tmp_path))


def test_default_file_is_created_private_and_reused(tmp_path):
    path = tmp_path / "a" / "b" / "master.keys"
    ring = load_keyring({}, default_file=str(path))
    assert ring.ids == ("k1",)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keyring({}, default_file=str(path)).key("k1") == ring.key("k1")
    assert [p.name for p in path.parent.iterdir()] == ["master.keys"]  # no temp files left behind


def test_explicit_sources_win_over_default_file(tmp_path):
    key = generate_master_key()
    default = tmp_path / "default.keys"
    ring = load_keyring({"NIJA_MASTER_KEYS": f"env1:{b64(key)}"}, default_file=str(default))
    assert ring.active_id == "env1" and not default.exists()
    path = private_file(tmp_path / "keys", f"file1 {b64(key)}\n")
    env = {"NIJA_MASTER_KEYS": f"env1:{b64(key)}", "NIJA_MASTER_KEY_FILE": str(path)}
    assert load_keyring(env).active_id == "env1"
    del env["NIJA_MASTER_KEYS"]
    assert load_keyring(env, default_file=str(default)).active_id == "file1"


# -- rotation ----------------------------------------------------------------------------------------


def test_next_key_id():
    assert next_key_id([]) == "k1"
    assert next_key_id(["k1"]) == "k2"
    assert next_key_id(["k2", "k10", "legacy"]) == "k11"
    assert next_key_id(["legacy"]) == "k1"


def test_add_master_key_and_reseal(tmp_path):
    path = tmp_path / "master.keys"
    old = load_keyring({}, default_file=str(path))
    sealed = seal(old, CREDS.to_bytes(), AAD)
    assert reseal(old, sealed, AAD) is None  # already under the active key

    assert add_master_key(str(path)) == "k2"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("#")  # comments kept
    new = read_key_file(str(path))
    assert new.active_id == "k2" and new.ids == ("k2", "k1")
    assert new.key("k1") == old.key("k1")
    assert unseal(new, sealed, AAD) == CREDS.to_bytes()  # old rows still open before re-sealing

    resealed = reseal(new, sealed, AAD)
    assert resealed is not None and resealed.key_id == "k2"
    assert unseal(new, resealed, AAD) == CREDS.to_bytes()
    assert reseal(new, resealed, AAD) is None
    with pytest.raises(SecretError):
        reseal(new, sealed, b"bob|coinbase")

    assert add_master_key(str(path)) == "k3"
    assert read_key_file(str(path)).ids == ("k3", "k2", "k1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["master.keys"]


def test_add_master_key_refuses_open_file(tmp_path):
    path = private_file(tmp_path / "keys", f"k1 {b64(generate_master_key())}\n", 0o644)
    with pytest.raises(SecretError, match="0600"):
        add_master_key(str(path))
    assert path.read_text().count("\n") == 1


def test_add_master_key_through_symlink_keeps_link(tmp_path):
    target = private_file(tmp_path / "real.keys", f"k1 {b64(generate_master_key())}\n")
    link = tmp_path / "link.keys"
    link.symlink_to(target)
    assert add_master_key(str(link)) == "k2"
    assert link.is_symlink() and read_key_file(str(target)).ids == ("k2", "k1")


# -- Vault -------------------------------------------------------------------------------------------

TOKEN = "hvs.test-token-do-not-print"


@pytest.fixture
def vault():
    with VaultEmulator(token=TOKEN) as server:
        yield server


def vault_env(vault: VaultEmulator, **extra: str) -> dict[str, str]:
    return {"VAULT_ADDR": vault.url, "VAULT_TOKEN": TOKEN, **extra}


def test_vault_keyring(vault):
    k1, k2 = generate_master_key(), generate_master_key()
    vault.put("nija/master-keys", {"k1": b64(k1), "active": "k2", "k2": b64(k2)})
    # Vault wins over the other sources.
    ring = load_keyring(vault_env(vault, NIJA_MASTER_KEYS=f"env:{b64(k1)}"), default_file="/nonexistent/x")
    assert ring.active_id == "k2" and ring.ids == ("k2", "k1") and ring.key("k1") == k1
    request = vault.requests[-1]
    assert request["method"] == "GET" and request["path"] == "/v1/secret/data/nija/master-keys"
    assert request["token"] == TOKEN


def test_vault_custom_mount_path_and_token_file(tmp_path):
    key = generate_master_key()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with VaultEmulator(token=TOKEN, mounts=("kv",)) as vault:
        vault.put("apps/nija", {"active": "k1", "k1": b64(key)}, mount="kv")
        env = {"VAULT_ADDR": vault.url, "VAULT_TOKEN_FILE": str(token_file),
               "NIJA_VAULT_MOUNT": "kv", "NIJA_VAULT_PATH": "apps/nija"}
        assert load_keyring(env).key("k1") == key


def test_vault_reads_latest_version(vault):
    vault.put("nija/master-keys", {"active": "k1", "k1": b64(generate_master_key())})
    k2 = generate_master_key()
    vault.put("nija/master-keys", {"active": "k2", "k2": b64(k2)})
    assert load_keyring(vault_env(vault)).key("k2") == k2


def _vault_error(env: dict[str, str]) -> str:
    with pytest.raises(SecretError) as info:
        load_keyring(env)
    shown = text_of(info.value)
    assert TOKEN not in shown and "wrong-token" not in shown
    return str(info.value)


def test_vault_errors(vault):
    assert "permission denied (403)" in _vault_error(vault_env(vault, VAULT_TOKEN="wrong-token"))
    assert "no such secret (404)" in _vault_error(vault_env(vault))
    assert "no such secret (404)" in _vault_error(vault_env(vault, NIJA_VAULT_MOUNT="nomount"))
    assert "no token" in _vault_error({"VAULT_ADDR": vault.url})

    vault.put("nija/master-keys", {"k1": b64(generate_master_key())})
    assert "'active'" in _vault_error(vault_env(vault))
    vault.put("nija/master-keys", {"active": "k1", "k1": "!!"})
    assert "not valid base64" in _vault_error(vault_env(vault))
    vault.put("nija/master-keys", {"active": "k1", "k1": 5})
    assert "base64 string" in _vault_error(vault_env(vault))


def test_vault_deleted_secret_is_missing(vault):
    import hvac

    vault.put("nija/master-keys", {"active": "k1", "k1": b64(generate_master_key())})
    client = hvac.Client(url=vault.url, token=TOKEN)
    client.secrets.kv.v2.delete_latest_version_of_secret(path="nija/master-keys")
    assert "no such secret (404)" in _vault_error(vault_env(vault))


def test_vault_unreachable():
    with VaultEmulator(token=TOKEN) as vault:
        url = vault.url
    message = _vault_error({"VAULT_ADDR": url, "VAULT_TOKEN": TOKEN})
    assert "cannot reach Vault" in message


# -- the emulator itself, through hvac ---------------------------------------------------------------


def test_emulator_matches_hvac_kv_v2(vault):
    import hvac

    client = hvac.Client(url=vault.url, token=TOKEN)
    written = client.secrets.kv.v2.create_or_update_secret(path="a/b", secret={"x": "1"})
    assert written["data"]["version"] == 1
    client.secrets.kv.v2.create_or_update_secret(path="a/b", secret={"x": "2"}, cas=1)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client.secrets.kv.v2.create_or_update_secret(path="a/b", secret={"x": "3"}, cas=1)
    latest = client.secrets.kv.v2.read_secret_version(path="a/b", raise_on_deleted_version=True)
    assert latest["data"]["data"] == {"x": "2"} and latest["data"]["metadata"]["version"] == 2
    first = client.secrets.kv.v2.read_secret_version(path="a/b", version=1, raise_on_deleted_version=True)
    assert first["data"]["data"] == {"x": "1"}
    assert vault.requests[-1]["query"] == {"version": ["1"]}
    with pytest.raises(hvac.exceptions.InvalidPath):
        client.secrets.kv.v2.read_secret_version(path="a/missing", raise_on_deleted_version=True)

    client.secrets.kv.v2.delete_latest_version_of_secret(path="a/b")
    with pytest.raises(hvac.exceptions.InvalidPath):
        client.secrets.kv.v2.read_secret_version(path="a/b", raise_on_deleted_version=True)
    deleted = client.secrets.kv.v2.read_secret_version(path="a/b", raise_on_deleted_version=False)
    assert deleted["data"]["data"] is None and deleted["data"]["metadata"]["deletion_time"]

    with pytest.raises(hvac.exceptions.Forbidden):
        hvac.Client(url=vault.url, token="nope").secrets.kv.v2.read_secret_version(
            path="a/b", raise_on_deleted_version=True
        )


def test_os_umask_does_not_widen_default_file(tmp_path):
    old = os.umask(0)
    try:
        path = tmp_path / "k.keys"
        load_keyring({}, default_file=str(path))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_concurrent_rotations_and_creations_lose_no_key(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    path = str(tmp_path / "d" / "master.keys")
    with ThreadPoolExecutor(8) as pool:
        rings = list(pool.map(lambda _: load_keyring({}, default_file=path), range(8)))
    assert len({ring.key("k1") for ring in rings}) == 1  # every creator ended up with the same key
    with ThreadPoolExecutor(8) as pool:
        new_ids = list(pool.map(lambda _: add_master_key(path), range(8)))
    assert sorted(new_ids) == [f"k{n}" for n in range(2, 10)]
    assert read_key_file(path).ids == tuple(f"k{n}" for n in range(9, 0, -1))


def test_default_file_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SecretError, match="cannot create master key file"):
        load_keyring({}, default_file=str(blocker / "sub" / "master.keys"))
