"""Keys per client for `rag serve --keys FILE`: who a key is, which collections it may read and
write, and its own limits. Pure decisions, no I/O but reading the file and the environment.

The file is TOML, one `[[key]]` table per client:

    [[key]]
    name = "team-a"                  # shown in the log and used for the per-client limits
    sha256 = "9f86d0...c15d"         # the key's SHA-256, hex (`printf %s KEY | sha256sum`)
    read = ["a-docs", "shared"]      # collections it may read (search, chat, lists)
    write = ["a-docs"]               # collections it may also upload to and delete from
    default = "a-docs"               # optional: its collection when a request names none
    max_requests = 16                # optional: API requests in flight (else --max-requests-per-client)
    max_chats = 2                    # optional: chat completions in flight

    [[key]]
    name = "team-b"
    env = "TEAM_B_KEY"               # or: the variable holding the key itself
    read = ["b-docs"]

The file never holds a key itself: only its hash, or the name of the variable that holds it.
A collection a key may write it may also read; `"*"` stands for every collection. A key sees
only its collections: any other answers exactly as a collection that does not exist (404), so
a key cannot learn the names of others'. Writing to a collection it may only read is a 403.

The server's own `--server-key-env` keys are each `Grant.everything()`: every collection.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rag.errors import ConfigError, RagError

ALL = "*"
GRANT_SCOPE_KEY = "rag.grant"  # set by RequireKey: the Grant of the key the request carries
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FIELDS = {"name", "sha256", "env", "read", "write", "default", "max_requests", "max_chats"}


class AccessDeniedError(RagError):
    """The key may read this collection but not write to it (403)."""


@dataclass(frozen=True)
class Grant:
    """What one key may do. `read`/`write`: collection names, None for every collection."""

    name: str
    read: frozenset[str] | None = None
    write: frozenset[str] | None = None
    default: str | None = None
    max_requests: int | None = None
    max_chats: int | None = None

    @classmethod
    def everything(cls, name: str = "server key") -> Grant:
        return cls(name=name)

    def may_read(self, collection: str) -> bool:
        return self.read is None or collection in self.read or self.may_write(collection)

    def may_write(self, collection: str) -> bool:
        return self.write is None or collection in self.write

    def may_write_any(self) -> bool:
        return self.write is None or bool(self.write)

    def visible(self, collections: Iterable[str]) -> list[str]:
        """The names of `collections` this key may see, in their order."""
        return [c for c in collections if self.may_read(c)]

    def default_collection(self, server_default: str) -> str:
        """The collection a request that names none goes to: the key's own default; else the
        server's when the key may read it; else the first it may read (by name). A key that
        may read nothing gets the server's (and then a 404)."""
        if self.default:
            return self.default
        if self.may_read(server_default):
            return server_default
        names = sorted((self.read or frozenset()) | (self.write or frozenset()))
        return names[0] if names else server_default


def key_digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


def find_grant(supplied: bytes | None, keys: Sequence[tuple[bytes, Grant]]) -> Grant | None:
    """The grant of the key `supplied` is, or None. Digests of equal length are compared with
    hmac.compare_digest, every one of them (no early exit): the time taken says nothing about
    the key, which one matched, or how many there are."""
    if supplied is None:
        return None
    digest, found = key_digest(supplied), None
    for stored, grant in keys:
        if hmac.compare_digest(digest, stored) and found is None:
            found = grant
    return found


def server_key_grants(keys: Iterable[str]) -> list[tuple[bytes, Grant]]:
    """The `--server-key-env` keys: each may use every collection; named by number (never by
    the key) for the log and the per-client limits."""
    return [(key_digest(k), Grant.everything(f"key #{i}")) for i, k in enumerate(keys, start=1)]


def load_keys(path: str | Path, environ: Mapping[str, str] | None = None) -> list[tuple[bytes, Grant]]:
    """(SHA-256 digest of the key, its Grant) per `[[key]]` of the file. ConfigError naming the
    file and the entry for anything wrong: the server does not start on a half-read key file."""
    environ = os.environ if environ is None else environ
    where = f"--keys {path}"
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{where}: cannot read the file ({e.strerror or e})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: not valid TOML ({e})") from None
    extra = set(data) - {"key"}
    if extra:
        raise ConfigError(f"{where}: unknown table(s) {', '.join(sorted(extra))}: give each key as a [[key]] table")
    entries = data.get("key")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{where}: no keys: give each key as a [[key]] table")
    out: list[tuple[bytes, Grant]] = []
    names: set[str] = set()
    digests: set[bytes] = set()
    for number, entry in enumerate(entries, start=1):
        digest, grant = _entry(entry, f"{where}, key {number}", environ)
        if grant.name in names:
            raise ConfigError(f"{where}: the name '{grant.name}' is given to two keys")
        if digest in digests:
            raise ConfigError(f"{where}, key '{grant.name}': the same key as an earlier entry")
        names.add(grant.name)
        digests.add(digest)
        out.append((digest, grant))
    return out


def _entry(entry: dict, where: str, environ: Mapping[str, str]) -> tuple[bytes, Grant]:
    unknown = set(entry) - _FIELDS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))} "
                          f"(known: {', '.join(sorted(_FIELDS))})")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: give it a name (name = \"team-a\")")
    where = f"{where} ('{name}')"
    if ("sha256" in entry) == ("env" in entry):
        raise ConfigError(f"{where}: give the key as sha256 = \"HEX\" (its SHA-256) or env = \"NAME\" "
                          "(the variable holding it), one of them; never the key itself")
    if "sha256" in entry:
        value = entry["sha256"]
        if not isinstance(value, str) or not _HEX64.fullmatch(value.strip().lower()):
            raise ConfigError(f"{where}: sha256 must be 64 hex digits (printf %s KEY | sha256sum)")
        digest = bytes.fromhex(value.strip().lower())
    else:
        variable = entry["env"]
        if not isinstance(variable, str) or not variable:
            raise ConfigError(f"{where}: env must name an environment variable")
        key = environ.get(variable, "")
        if not key.strip():
            raise ConfigError(f"{where}: the variable {variable} is not set or empty")
        digest = key_digest(key.strip())
    read, write = _names(entry, "read", where), _names(entry, "write", where)
    default = entry.get("default")
    limits = {}
    for field in ("max_requests", "max_chats"):
        if field in entry:
            value = entry[field]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{where}: {field} must be a whole number, 1 or more")
            limits[field] = value
    grant = Grant(name=name.strip(), read=read, write=write, **limits)
    if default is not None:
        if not isinstance(default, str) or not grant.may_read(default):
            raise ConfigError(f"{where}: default must be a collection the key may read")
        grant = dataclasses.replace(grant, default=default)
    return digest, grant


def _names(entry: dict, field: str, where: str) -> frozenset[str] | None:
    value = entry.get(field, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{where}: {field} must be a list of collection names (or [\"*\"] for all)")
    names = frozenset(v.strip() for v in value)
    return None if ALL in names else names
