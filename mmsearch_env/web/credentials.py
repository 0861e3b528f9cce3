"""API keys from environment variables or a secrets file, and redaction so they never reach logs or errors.

Keys are never options of a backend (options end up in ``env.spec``, episode records and logs). A backend
names the *variable* (``api_key_env="SERPAPI_API_KEY"``); :func:`get_secret` looks it up:

1. the environment variable of that name;
2. the secrets file: ``secrets_file`` if given, else ``$MMSEARCH_SECRETS_FILE``, else
   ``~/.config/mmsearch/secrets.toml`` when it exists. TOML (``SERPAPI_API_KEY = "..."``) or JSON
   (``{"SERPAPI_API_KEY": "..."}``), chosen by the file suffix. A file readable by group or others is
   used but warned about once (``chmod 600`` it).

Every key handed out is remembered (in this process only) so that :func:`redact` can blank it out of any
message, whatever route it took (a URL, an echoed request, an exception text).
"""

from __future__ import annotations

import json
import os
import stat
import threading
import warnings
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the tomli backport, if installed
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        tomllib = None  # type: ignore[assignment]

from mmsearch_env.errors import ConfigError

__all__ = ["DEFAULT_SECRETS_FILE", "SECRET_PARAMS", "get_secret", "redact", "redact_url"]

#: Query parameters whose values never appear in messages (SerpAPI puts its key in the query string).
SECRET_PARAMS = frozenset({"api_key", "apikey", "key", "token", "access_token", "auth", "password", "secret"})

DEFAULT_SECRETS_FILE = Path("~/.config/mmsearch/secrets.toml")
_KNOWN: set[str] = set()
_LOCK = threading.Lock()
_WARNED: set[str] = set()


def redact(text: str) -> str:
    """``text`` with every secret :func:`get_secret` has returned replaced by ``***``."""
    with _LOCK:
        known = sorted(_KNOWN, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, "***")
    return text


def redact_url(url: str) -> str:
    """``url`` with the values of secret-looking query parameters (``api_key``, ``token``...) redacted.

    >>> redact_url("https://serpapi.com/search?engine=google&q=x&api_key=abc123")
    'https://serpapi.com/search?engine=google&q=x&api_key=REDACTED'
    """
    try:
        parts = urlsplit(url)
        query = [(k, "REDACTED" if k.lower() in SECRET_PARAMS else v) for k, v in parse_qsl(parts.query, True)]
        netloc = parts.netloc.rpartition("@")[2]  # drop user:password@
        return redact(urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="/:"), "")))
    except ValueError:
        return "<unparseable URL>"


def _secrets_path(secrets_file: str | os.PathLike[str] | None) -> Path | None:
    if secrets_file is not None:
        path = Path(secrets_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"secrets file {str(path)!r} does not exist; create it or drop the secrets_file option")
        return path
    if os.environ.get("MMSEARCH_SECRETS_FILE"):
        path = Path(os.environ["MMSEARCH_SECRETS_FILE"]).expanduser()
        if not path.is_file():
            raise ConfigError(f"MMSEARCH_SECRETS_FILE points to {str(path)!r}, which does not exist")
        return path
    path = DEFAULT_SECRETS_FILE.expanduser()
    return path if path.is_file() else None


def _read_secrets(path: Path) -> dict[str, object]:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO) and str(path) not in _WARNED:
        _WARNED.add(str(path))
        warnings.warn(
            f"secrets file {str(path)!r} is readable by other users (mode {stat.filemode(mode)}); "
            f"run `chmod 600 {path}`",
            stacklevel=3,
        )
    raw = path.read_bytes()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(raw)
        else:
            if tomllib is None:
                raise ConfigError(
                    f"reading the TOML secrets file {str(path)!r} on Python 3.10 needs `pip install tomli` "
                    "(or use a .json secrets file)"
                )
            data = tomllib.loads(raw.decode("utf-8"))
    except ConfigError:
        raise
    except ValueError as exc:
        # the parser's message may quote the file's text, which holds secrets: give the position only
        where = f" at line {exc.lineno}" if hasattr(exc, "lineno") else ""
        raise ConfigError(f"secrets file {str(path)!r} is not valid {path.suffix or 'TOML'}{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f'secrets file {str(path)!r} must hold a table/object of NAME = "value" entries')
    return data


def get_secret(
    name: str,
    *,
    secrets_file: str | os.PathLike[str] | None = None,
    purpose: str = "this backend",
    required: bool = True,
) -> str | None:
    """The value of secret ``name`` (an environment variable name) or a :class:`ConfigError` saying how to set it.

    With ``required=False`` a missing secret returns ``None`` (e.g. JINA Reader works without a key).
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"the name of a secret must be a non-empty string (an environment variable), got {name!r}")
    value: object = os.environ.get(name) or None
    if value is None:
        path = _secrets_path(secrets_file)
        if path is not None:
            value = _read_secrets(path).get(name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"secret {name!r} in {str(path)!r} must be a string")
    if not value:
        if not required:
            return None
        raise ConfigError(
            f"{purpose} needs an API key: set the environment variable {name} "
            f'(export {name}=...) or put {name} = "..." in a secrets file '
            f"({DEFAULT_SECRETS_FILE}, $MMSEARCH_SECRETS_FILE, or the secrets_file option; chmod 600)."
        )
    assert isinstance(value, str)
    value = value.strip()
    with _LOCK:
        if len(value) >= 4:  # redacting 1-3 characters would mangle every message
            _KNOWN.add(value)
    return value
