"""Broker API keys encrypted at rest: AES-256-GCM under a keyring of named master keys.

A sealed secret carries the id of the master key that sealed it, so a keyring holding the new active key
*and* the old ones can open every row while rotation re-seals them (`add_master_key`, then `reseal`).
The associated data is the owner (`f"{user_id}|{broker}"`), so a ciphertext copied onto another user's
row does not open. The master keys come from Vault, the environment or a 0600 file (`load_keyring`).
Nothing here ever puts plaintext, key bytes or a Vault token into a repr or an exception message.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# What the store keeps: re-exported so callers of seal/unseal need one import.
from services.permission.permissions import SealedSecret

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
DEFAULT_VAULT_MOUNT = "secret"
DEFAULT_VAULT_PATH = "nija/master-keys"


class SecretError(Exception):
    """A secret cannot be sealed, opened or configured. Messages never contain secret material."""


# -- values ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, repr=False)
class ApiCredentials:
    """A user's API key for one broker. repr/str are redacted so it can't leak through logs or tracebacks."""

    api_key: str
    api_secret: str
    passphrase: str = ""

    def __post_init__(self) -> None:
        for name in ("api_key", "api_secret", "passphrase"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"ApiCredentials.{name} must be a str")

    def __repr__(self) -> str:
        return "ApiCredentials(api_key=<redacted>, api_secret=<redacted>, passphrase=<redacted>)"

    __str__ = __repr__

    def to_bytes(self) -> bytes:
        """The plaintext to seal (JSON)."""
        return json.dumps(
            {"api_key": self.api_key, "api_secret": self.api_secret, "passphrase": self.passphrase},
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ApiCredentials:
        """Inverse of `to_bytes`; raises SecretError (without echoing the input) on anything else."""
        try:
            fields = json.loads(data)
            return cls(fields["api_key"], fields["api_secret"], fields.get("passphrase", ""))
        except (ValueError, TypeError, KeyError, AttributeError):
            raise SecretError("sealed credentials are not a valid ApiCredentials record") from None


def check_key_id(key_id: object, where: str = "master key id") -> str:
    """Key ids are stored next to every ciphertext: keep them short and boring."""
    if not isinstance(key_id, str) or not KEY_ID_RE.fullmatch(key_id):
        raise SecretError(f"{where}: a key id must match [A-Za-z0-9_-]{{1,32}}")
    return key_id


class Keyring:
    """Named 32-byte master keys, one of them active (the one new secrets are sealed under)."""

    __slots__ = ("_active_id", "_keys")

    def __init__(self, active_id: str, keys: Mapping[str, bytes]) -> None:
        checked: dict[str, bytes] = {}
        for key_id, key in keys.items():
            check_key_id(key_id)
            if not isinstance(key, (bytes, bytearray, memoryview)) or len(key) != KEY_BYTES:
                size = len(key) if isinstance(key, (bytes, bytearray, memoryview)) else type(key).__name__
                raise SecretError(f"master key {key_id!r} must be {KEY_BYTES} bytes, got {size}")
            checked[key_id] = bytes(key)
        check_key_id(active_id, "active master key id")
        if active_id not in checked:
            raise SecretError(f"active master key {active_id!r} is not in the keyring")
        self._active_id = active_id
        self._keys = MappingProxyType(checked)

    @property
    def active_id(self) -> str:
        return self._active_id

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def key(self, key_id: str) -> bytes:
        try:
            return self._keys[key_id]
        except (KeyError, TypeError):
            raise SecretError(f"unknown master key id {key_id!r}") from None

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __repr__(self) -> str:
        return f"Keyring(active_id={self._active_id!r}, ids={self.ids!r})"


def generate_master_key() -> bytes:
    """A fresh random AES-256 key."""
    return AESGCM.generate_key(bit_length=256)


# -- sealing -----------------------------------------------------------------------------------------


def seal(keyring: Keyring, plaintext: bytes, aad: bytes) -> SealedSecret:
    """Encrypt under the active key with a fresh random nonce (never reused: 96 random bits per seal)."""
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(keyring.key(keyring.active_id)).encrypt(nonce, bytes(plaintext), bytes(aad))
    return SealedSecret(key_id=keyring.active_id, blob=nonce + ciphertext)


def unseal(keyring: Keyring, sealed: SealedSecret, aad: bytes) -> bytes:
    """Decrypt with the key the secret names; wrong key, wrong owner (aad) or tampering -> SecretError."""
    key = keyring.key(sealed.key_id)
    blob = bytes(sealed.blob)
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise SecretError(f"sealed secret under key {sealed.key_id!r} is truncated")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], bytes(aad))
    except InvalidTag:
        raise SecretError(
            f"cannot open sealed secret under key {sealed.key_id!r}: wrong key, wrong owner or tampered data"
        ) from None


def reseal(keyring: Keyring, sealed: SealedSecret, aad: bytes) -> SealedSecret | None:
    """Re-encrypt under the active key (rotation); None when the secret already is under it."""
    if sealed.key_id == keyring.active_id:
        return None
    return seal(keyring, unseal(keyring, sealed, aad), aad)


# -- loading -----------------------------------------------------------------------------------------


def load_keyring(environ: Mapping[str, str], default_file: str | None = None) -> Keyring:
    """The master keyring from, in order: Vault (VAULT_ADDR), NIJA_MASTER_KEYS, NIJA_MASTER_KEY_FILE,
    `default_file` (created with one fresh key if missing: the embedded dev setup)."""
    if environ.get("VAULT_ADDR"):
        return _load_from_vault(environ)
    if environ.get("NIJA_MASTER_KEYS"):
        return _parse_keys_env(environ["NIJA_MASTER_KEYS"])
    if environ.get("NIJA_MASTER_KEY_FILE"):
        return read_key_file(environ["NIJA_MASTER_KEY_FILE"])
    if default_file:
        _create_key_file(default_file)
        return read_key_file(default_file)
    raise SecretError(
        "no master key configured: set VAULT_ADDR (+ VAULT_TOKEN) for Vault, "
        "NIJA_MASTER_KEYS=id:base64key,... or NIJA_MASTER_KEY_FILE=<0600 file of 'id base64key' lines>"
    )


def _decode_key(text: str, where: str, key_id: str) -> bytes:
    """Base64 (standard or url-safe alphabet) -> bytes; the message names the key, never its value."""
    try:
        return base64.b64decode(text.strip().replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(f"{where}: master key {key_id!r} is not valid base64") from None


def _encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def _keyring(active_id: str, pairs: list[tuple[str, str]], where: str) -> Keyring:
    keys: dict[str, bytes] = {}
    for key_id, text in pairs:
        check_key_id(key_id, where)
        if key_id in keys:
            raise SecretError(f"{where}: master key id {key_id!r} appears twice")
        keys[key_id] = _decode_key(text, where, key_id)
    if not keys:
        raise SecretError(f"{where}: no master keys")
    try:
        return Keyring(active_id, keys)
    except SecretError as exc:
        raise SecretError(f"{where}: {exc}") from None


def _parse_keys_env(value: str) -> Keyring:
    """NIJA_MASTER_KEYS = "id:base64key,id2:base64key"; the first is active."""
    pairs = []
    for n, item in enumerate((part.strip() for part in value.split(",")), start=1):
        if not item:
            continue
        key_id, sep, text = item.partition(":")
        if not sep:
            raise SecretError(f"NIJA_MASTER_KEYS: entry {n} is not 'id:base64key'")
        pairs.append((key_id.strip(), text))
    return _keyring(pairs[0][0] if pairs else "", pairs, "NIJA_MASTER_KEYS")


def _key_lines(text: str, where: str) -> list[tuple[str, str]]:
    pairs = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise SecretError(f"{where}:{lineno}: expected 'id base64key'")
        pairs.append((fields[0], fields[1]))
    return pairs


def _read_private_file(path: str) -> str:
    """Read a file that must be a regular file without group/other access (0600 or stricter)."""
    try:
        fd = os.open(path, os.O_RDONLY)  # symlinks allowed (Kubernetes secret mounts); the target is checked
    except OSError as exc:
        raise SecretError(f"cannot open master key file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretError(f"master key file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise SecretError(
                f"master key file {path} is accessible by group/other (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"it must be 0600 or stricter: chmod 600 {path}"
            )
        with os.fdopen(fd, encoding="utf-8", closefd=False) as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        raise SecretError(f"cannot read master key file {path}") from None
    finally:
        os.close(fd)


def read_key_file(path: str) -> Keyring:
    """A file of "id base64key" lines (# comments allowed); the first key is active."""
    pairs = _key_lines(_read_private_file(path), path)
    return _keyring(pairs[0][0] if pairs else "", pairs, path)


_FILE_HEADER = (
    "# NIJA master keys: 'id base64key' per line; the first is active. Keep old keys until rotation\n"
    "# has re-sealed every secret. Mode must stay 0600.\n"
)


def _write_private_file(path: str, text: str, *, replace: bool) -> None:
    """Write a 0600 file atomically (temp + rename/link) so readers never see a half-written keyring."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path exists: a concurrent creator won, keep its key
            except FileExistsError:
                pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _create_key_file(path: str) -> None:
    """Create `path` (and its parents, 0700) holding one fresh key "k1", unless it exists."""
    if os.path.lexists(path):
        return
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        _write_private_file(path, f"{_FILE_HEADER}k1 {_encode_key(generate_master_key())}\n", replace=False)
    except OSError as exc:
        raise SecretError(f"cannot create master key file {path}: {exc.strerror}") from None


@contextlib.contextmanager
def _dir_lock(path: str) -> Iterator[None]:
    """Serialize rotations of one key file (flock on its directory), so no generated key is lost."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def next_key_id(ids: Iterable[str]) -> str:
    """k1 -> k2 -> ...: one more than the highest "k<n>" id present."""
    numbers = [int(m.group(1)) for key_id in ids if (m := re.fullmatch(r"k(\d{1,30})", key_id))]
    return f"k{max(numbers, default=0) + 1}"


def add_master_key(path: str) -> str:
    """Rotation step 1: add a fresh key to a key file as the new active one, keeping the old keys so existing
    ciphertexts still open. Returns the new id. Then reload the keyring and `reseal` every row."""
    path = os.path.realpath(path)  # replace the file a symlink points at, not the link
    with _dir_lock(path):
        text = _read_private_file(path)
        pairs = _key_lines(text, path)
        _keyring(pairs[0][0] if pairs else "", pairs, path)  # refuse to extend a broken file
        new_id = next_key_id([key_id for key_id, _ in pairs])
        lines = text.splitlines(keepends=True)
        first_key = next(
            (i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")), len(lines)
        )
        lines.insert(first_key, f"{new_id} {_encode_key(generate_master_key())}\n")
        _write_private_file(path, "".join(lines), replace=True)
    return new_id


def _load_from_vault(environ: Mapping[str, str]) -> Keyring:
    """KV v2 secret {"active": "<id>", "<id>": "<base64 key>", ...} read with hvac."""
    import hvac  # only services configured for Vault pay for importing hvac/requests
    import requests

    addr = environ["VAULT_ADDR"]
    mount = environ.get("NIJA_VAULT_MOUNT") or DEFAULT_VAULT_MOUNT
    path = environ.get("NIJA_VAULT_PATH") or DEFAULT_VAULT_PATH
    where = f"Vault {addr} {mount}/{path}"
    token = environ.get("VAULT_TOKEN", "").strip()
    if not token and environ.get("VAULT_TOKEN_FILE"):
        try:
            with open(environ["VAULT_TOKEN_FILE"], encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise SecretError(f"cannot read VAULT_TOKEN_FILE {environ['VAULT_TOKEN_FILE']}: {exc.strerror}") from None
    if not token:
        raise SecretError("VAULT_ADDR is set but no token: set VAULT_TOKEN or VAULT_TOKEN_FILE")

    client = hvac.Client(
        url=addr,
        token=token,
        verify=environ.get("VAULT_CACERT") or environ.get("VAULT_CAPATH") or True,
        namespace=environ.get("VAULT_NAMESPACE") or None,
        timeout=10,
    )
    try:
        response = client.secrets.kv.v2.read_secret_version(
            path=path, mount_point=mount, raise_on_deleted_version=True
        )
    except hvac.exceptions.Forbidden:
        raise SecretError(f"{where}: permission denied (403): check the token and its policy") from None
    except hvac.exceptions.Unauthorized:
        raise SecretError(f"{where}: unauthorized (401): check the token") from None
    except hvac.exceptions.InvalidPath:
        raise SecretError(
            f"{where}: no such secret (404): is the KV v2 engine mounted at {mount!r} and the secret written?"
        ) from None
    except hvac.exceptions.VaultError as exc:
        raise SecretError(f"{where}: Vault error {type(exc).__name__}") from None
    except requests.exceptions.RequestException as exc:
        raise SecretError(f"{where}: cannot reach Vault ({type(exc).__name__})") from None

    try:
        data = response["data"]["data"]
        if not isinstance(data, dict):
            raise TypeError
    except (KeyError, TypeError):
        raise SecretError(f"{where}: not a KV v2 secret") from None
    active = data.get("active")
    if not isinstance(active, str):
        raise SecretError(f"{where}: the secret needs an 'active' field naming the active key id")
    pairs = []
    for key_id, text in data.items():
        if key_id == "active":
            continue
        if not isinstance(text, str):
            raise SecretError(f"{where}: master key {key_id!r} must be a base64 string")
        pairs.append((key_id, text))
    pairs.sort(key=lambda pair: pair[0] != active)  # active first, like the other sources
    return _keyring(active, pairs, where)
