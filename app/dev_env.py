"""How operator commands find a running `parley dev`: it writes ``$PARLEY_DATA_DIR/env`` (default
``.parley/env``), shell-sourceable ``export KEY='value'`` lines with its database and Redis URLs, and
removes it on exit. ``parley migrate``, ``streams``, ``users …`` run from the same directory read it
when ``DATABASE_URL`` / ``REDIS_URL`` are not set; ``source .parley/env`` does the same for a shell.
A file left by a ``parley dev`` that was killed is ignored (its pid is gone).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, MutableMapping
from pathlib import Path

FILE_NAME = "env"
#: What `parley dev` shares: where its servers are, and which process owns them.
KEYS = ("DATABASE_URL", "REDIS_URL", "PARLEY_API_URL", "PARLEY_DEV_PID")


def data_dir(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("PARLEY_DATA_DIR", ".parley")).resolve()


def write(directory: Path, values: Mapping[str, str]) -> Path:
    path = directory / FILE_NAME
    lines = [f"export {key}={shlex.quote(values[key])}" for key in KEYS if key in values]
    path.write_text("# written by `parley dev` while it runs; removed when it stops\n" + "\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def read(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip().removeprefix("export ").strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        parts = shlex.split(raw)
        values[key.strip()] = parts[0] if parts else ""
    return values


def _alive(pid: str | None) -> bool:
    try:
        os.kill(int(pid or ""), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def load_running(environ: MutableMapping[str, str]) -> Path | None:
    """Fill DATABASE_URL / REDIS_URL from a running `parley dev`'s file unless they are set already.
    Returns the file used, or None."""
    if "DATABASE_URL" in environ and "REDIS_URL" in environ:
        return None
    path = data_dir(environ) / FILE_NAME
    if not path.is_file():
        return None
    values = read(path)
    if not _alive(values.get("PARLEY_DEV_PID")):
        return None
    for key in ("DATABASE_URL", "REDIS_URL"):
        if key in values:
            environ.setdefault(key, values[key])
    return path
