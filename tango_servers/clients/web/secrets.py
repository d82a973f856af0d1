"""Passwords and tokens stored hashed, compared in constant time.

Passwords (chosen by people, guessable) use scrypt with a random salt; the format
``scrypt$N$r$p$<salt hex>$<hash hex>`` carries its own parameters, so stronger ones can be used later
without breaking the hashes in a beamline's configuration. Tokens (for scripts) are random and long
(:data:`MIN_TOKEN` characters at least, see :func:`new_token`): guessing one is hopeless whatever the
hash, so they are stored as ``sha256$<hex>`` and checked in microseconds instead of scrypt's ~50 ms
and 16 MiB, which a request carrying a made-up token could otherwise make the server spend.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

#: scrypt cost parameters (about 50 ms and 16 MiB a check)
N, R, P = 16384, 8, 1
#: shortest token `--hash-token` takes (secrets.token_urlsafe(32) gives 43 characters)
MIN_TOKEN = 32


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    """The stored form of the password ``secret``."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=N, r=R, p=P, maxmem=64 * 1024 * 1024)
    return f"scrypt${N}${R}${P}${salt.hex()}${digest.hex()}"


def new_token() -> str:
    """A fresh random token (256 bits), for a script's ``Authorization: Bearer`` header."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The stored form of ``token``; ValueError for one too short to be random enough."""
    if len(token) < MIN_TOKEN:
        raise ValueError(
            f"a token of {len(token)} characters is refused: expected at least {MIN_TOKEN} random characters "
            "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return "sha256$" + hashlib.sha256(token.encode()).hexdigest()


def _looks_like(stored: str, kind: str) -> bool:
    parts = stored.split("$")
    try:
        if kind == "token":
            return len(parts) == 2 and parts[0] == "sha256" and len(bytes.fromhex(parts[1])) == 32
        ok = len(parts) == 6 and parts[0] == "scrypt" and all(int(x) > 0 for x in parts[1:4])
        bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
        return ok
    except (ValueError, IndexError):
        return False


def check_hash_format(stored: str, what: str, kind: str = "password") -> None:
    """ValueError unless ``stored`` looks like the output of ``--hash-password`` (``kind`` password) or
    ``--hash-token`` (``kind`` token); a plain password or token does not."""
    if not _looks_like(stored, kind):
        form = "sha256$hash" if kind == "token" else "scrypt$N$r$p$salt$hash"
        raise ValueError(f"{what}: expected a hash from `xrd-pipeline web --hash-{kind}` ({form})")


def verify_secret(secret: str, stored: str) -> bool:
    """Whether the password ``secret`` hashes to ``stored`` (False for text that is not valid Unicode)."""
    _, n, r, p, salt, digest = stored.split("$")
    try:
        encoded = secret.encode()
    except UnicodeEncodeError:
        return False
    found = hashlib.scrypt(encoded, salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), maxmem=64 * 1024 * 1024)
    return hmac.compare_digest(found.hex(), digest)


def verify_token(token: str, stored: str) -> bool:
    """Whether ``token`` hashes to ``stored`` (a ``sha256$`` form)."""
    found = "sha256$" + hashlib.sha256(token.encode(errors="replace")).hexdigest()
    return hmac.compare_digest(found, stored)
