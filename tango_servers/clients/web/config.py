"""The web server's configuration: where it listens and who may write (the ``web:`` section).

```yaml
web:
  bind: 127.0.0.1:8080
  accounts:            # user -> hash from `xrd-pipeline web --hash-password`
    operator: "scrypt$16384$8$1$<salt hex>$<hash hex>"
  tokens:              # name -> hash from `xrd-pipeline web --hash-token`, for scripts (Bearer <token>)
    beamline-script: "sha256$..."
  proxy_user_header: X-Remote-User   # trust this header's user name ...
  trusted_proxies: [10.0.0.5]        # ... only on requests from these addresses (IPs or CIDRs)
  audit_log: /var/log/xrd-web-audit.log
```

Passwords are stored hashed only (scrypt with a salt); tokens as SHA-256 (they are random and
long, so a fast hash is enough and a check costs microseconds, not 16 MiB of scrypt). The proxy's
header is a login only together with ``trusted_proxies``: any client can send the header itself, so
a header without the list is refused. A bind on any address other than the loopback without any
login configured is refused: it would give every host write access.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .secrets import check_hash_format

DEFAULT_BIND = "127.0.0.1:8080"
_KEYS = {"bind", "accounts", "tokens", "proxy_user_header", "trusted_proxies", "audit_log"}
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class WebConfig:
    """Where to listen and how writers log in (no login configured: read-only for everyone)."""

    host: str = "127.0.0.1"
    port: int = 8080
    accounts: Mapping[str, str] = field(default_factory=dict)
    tokens: Mapping[str, str] = field(default_factory=dict)
    proxy_user_header: str = ""
    audit_log: Path | None = None
    trusted_proxies: tuple[Network, ...] = ()

    @property
    def proxy_logins(self) -> bool:
        """Whether a proxy's user header can make a writer (the header and the proxies both configured)."""
        return bool(self.proxy_user_header and self.trusted_proxies)

    @property
    def logins(self) -> bool:
        """Whether anybody can log in (else every write is refused)."""
        return bool(self.accounts or self.tokens or self.proxy_logins)

    def trusted_proxy(self, host: str | None) -> bool:
        """Whether a request from ``host`` (the peer's address) came through a trusted proxy."""
        try:
            address = ipaddress.ip_address((host or "").strip("[]"))
        except ValueError:
            return False
        return any(address in network for network in self.trusted_proxies)

    def check_bind(self) -> None:
        """ValueError for a non-loopback bind without any login configured."""
        if not is_loopback(self.host) and not self.logins:
            raise ValueError(
                f"refusing to listen on {self.host}:{self.port} (not this host only) with no login configured: "
                "add web: accounts, tokens or proxy_user_header with trusted_proxies to the --config file, "
                "or bind 127.0.0.1"
            )


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) -> (host, port); ValueError naming the value."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bind {text!r}: expected HOST:PORT, e.g. {DEFAULT_BIND}")
    return host.strip("[]"), int(port)


def _hashes(section: Mapping[str, Any], key: str, kind: str) -> dict[str, str]:
    value = section.get(key) or {}
    if not isinstance(value, Mapping):
        raise ValueError(f"web: {key} must map names to hashes (xrd-pipeline web --hash-{kind}), not {value!r}")
    for name, hashed in value.items():
        check_hash_format(str(hashed), f"web: {key}: {name}", kind)
    return {str(k): str(v) for k, v in value.items()}


def _proxies(section: Mapping[str, Any]) -> tuple[Network, ...]:
    """``trusted_proxies`` as networks; ValueError naming a bad entry, or a header without the list."""
    value = section.get("trusted_proxies") or []
    if isinstance(value, str) or not isinstance(value, list):
        raise ValueError(f"web: trusted_proxies {value!r}: expected a list of IP addresses or CIDRs")
    try:
        networks = tuple(ipaddress.ip_network(str(entry), strict=False) for entry in value)
    except ValueError as exc:
        raise ValueError(
            f"web: trusted_proxies: {exc}; expected IP addresses or CIDRs like 10.0.0.5 or 10.0.0.0/24"
        ) from None
    header = section.get("proxy_user_header")
    if header and not networks:
        raise ValueError(
            f"web: proxy_user_header {header!r} without trusted_proxies: any client could send that header and "
            "write as anybody; list the reverse proxy's addresses in trusted_proxies"
        )
    if networks and not header:
        raise ValueError("web: trusted_proxies without proxy_user_header: expected both or neither")
    return networks


def web_config(section: Mapping[str, Any], bind: str | None = None) -> WebConfig:
    """The ``web:`` section (``bind`` from the command line wins). ValueError naming a bad value."""
    unknown = sorted(set(section) - _KEYS)
    if unknown:
        raise ValueError(f"web: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(_KEYS))}")
    host, port = parse_bind(bind or str(section.get("bind") or DEFAULT_BIND))
    audit = section.get("audit_log")
    return WebConfig(
        host,
        port,
        _hashes(section, "accounts", "password"),
        _hashes(section, "tokens", "token"),
        str(section.get("proxy_user_header") or ""),
        Path(audit) if audit else None,
        _proxies(section),
    )
