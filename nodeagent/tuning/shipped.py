"""Where the package's own profiles are: the loader (a base named by `extends:`) and the
profile search both need it, so it sits below both."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _shipped() -> Path:
    """The profiles the package carries as data, wherever it is installed (a checkout, a
    virtualenv, a Debian package). pip and setuptools install a package unpacked, so this is
    a real directory; a zipped package would be a Traversable without a path, and is refused
    here rather than found to hold no profiles."""
    found = resources.files("nodeagent.tuning") / "assets" / "profiles"
    if not isinstance(found, Path):
        raise RuntimeError(f"nodeagent's profiles are not on a filesystem ({found!r})")
    return found


SHIPPED = _shipped()
