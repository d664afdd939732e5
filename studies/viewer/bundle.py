"""The OHIF viewer's files: one pinned npm release, fetched and checked at install time.

`python -m studies.viewer.bundle` downloads `@ohif/app`'s tarball (MIT; its `dist/` is the
prebuilt viewer) from the npm registry, refuses it unless its sha512 is the pinned one,
unpacks `dist/` into the viewer root and makes it servable below any path:

- webpack's public path, built in as "/", becomes the page's `window.PUBLIC_URL` (set by the
  tenant's generated `app-config.js`) in the window, and the script's own directory in the
  viewer's web workers;
- `index.html` is kept as a template: its absolute links are rewritten per request by
  `index_html`, its two inline scripts move into `app-config.js` (the page's policy allows no
  inline script) and the service-worker loader, which would import from a CDN, is dropped.

The tarball is cached (PORTAL_CACHE_DIR, default ~/.cache/pacs-portal) so a new checkout on
the same machine installs without the network. Nothing is loaded from the internet at run
time: the viewer's files are served by the portal (whitenoise) or by nginx from /static/.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from functools import lru_cache
from html import escape
from pathlib import Path

OHIF_PACKAGE = "@ohif/app"
OHIF_VERSION = "3.13.2"
OHIF_INTEGRITY = (
    "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjj"
    "kycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
)
DEFAULT_REGISTRY = "https://registry.npmjs.org"
MARKER = "portal-viewer.json"
# Raised when what `install` makes of the same release changes, so installs are redone.
LAYOUT = 1
TEMPLATE = "index.template.html"
# The largest tarball accepted (the pinned one is 50 MB) and the most it may unpack to.
MAX_DOWNLOAD_BYTES = 200 * 1024 * 1024
MAX_UNPACKED_BYTES = 1024 * 1024 * 1024

_PUBLIC_PATH = '__webpack_require__.p = "/";'
_RUNTIME_PUBLIC_PATH = (
    '__webpack_require__.p = (typeof document !== "undefined" ? (window.PUBLIC_URL || "/") '
    ': new URL(".", self.location.href).pathname);'
)
_INLINE_SCRIPT = re.compile(r"<script>[^<]*</script>")
_SERVICE_WORKER = re.compile(r'<script[^>]*src="/init-service-worker\.js"[^>]*></script>')
_CONFIG_SCRIPT = '<script rel="preload" as="script" src="/app-config.js"></script>'
_ABSOLUTE_LINK = re.compile(r'(href|src)="/(?!/)')


class BundleError(Exception):
    """The viewer could not be fetched or does not look like the pinned release."""


def cache_dir() -> Path:
    configured = os.environ.get("PORTAL_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pacs-portal"


def tarball_url(registry: str) -> str:
    name = OHIF_PACKAGE.split("/")[1]
    return f"{registry.rstrip('/')}/{OHIF_PACKAGE}/-/{name}-{OHIF_VERSION}.tgz"


def _integrity(path: Path) -> str:
    digest = hashlib.sha512()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def _download(url: str, target: Path) -> None:
    if not url.startswith(("https://", "http://")):
        raise BundleError(f"the registry must be an http(s) URL, not {url}")
    partial = target.with_suffix(".part")
    received = 0
    with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:  # noqa: S310
        while chunk := response.read(1 << 20):
            received += len(chunk)
            if received > MAX_DOWNLOAD_BYTES:
                raise BundleError(f"{url} is larger than {MAX_DOWNLOAD_BYTES} bytes")
            out.write(chunk)
    partial.replace(target)


def tarball(registry: str) -> Path:
    """The pinned release's tarball, from the cache or the registry, checked."""
    path = cache_dir() / f"ohif-app-{OHIF_VERSION}.tgz"
    if not path.exists() or _integrity(path) != OHIF_INTEGRITY:
        path.parent.mkdir(parents=True, exist_ok=True)
        _download(tarball_url(registry), path)
        found = _integrity(path)
        if found != OHIF_INTEGRITY:
            path.unlink()
            raise BundleError(
                f"{OHIF_PACKAGE}@{OHIF_VERSION}: integrity {found}, not the pinned one"
            )
    return path


def _unpack(archive: Path, target: Path) -> None:
    total = 0
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if not member.name.startswith("package/dist/"):
                    continue
                if not (member.isfile() or member.isdir()):
                    continue
                total += member.size
                if total > MAX_UNPACKED_BYTES:
                    raise BundleError(f"the viewer unpacks to more than {MAX_UNPACKED_BYTES} bytes")
                member.name = member.name.removeprefix("package/dist/")
                if member.name:
                    tar.extract(member, target, filter="data")
    except tarfile.TarError as error:
        raise BundleError(f"the viewer's tarball cannot be unpacked safely: {error}") from error


def _patch_public_path(root: Path) -> int:
    patched = 0
    for script in root.glob("*.js"):
        text = script.read_text(encoding="utf-8")
        if _PUBLIC_PATH in text:
            script.write_text(text.replace(_PUBLIC_PATH, _RUNTIME_PUBLIC_PATH), encoding="utf-8")
            patched += 1
    return patched


def _make_template(root: Path) -> None:
    index = (root / "index.html").read_text(encoding="utf-8")
    if _CONFIG_SCRIPT not in index or len(_INLINE_SCRIPT.findall(index)) != 2:
        raise BundleError("the viewer's index.html is not shaped as expected for this release")
    template = _SERVICE_WORKER.sub("", _INLINE_SCRIPT.sub("", index))
    # The tenant's own app-config.js; every other link points at the shared files.
    template = template.replace(_CONFIG_SCRIPT, '<script src="{config_url}"></script>')
    template = _ABSOLUTE_LINK.sub(r'\1="{assets_url}', template)
    (root / TEMPLATE).write_text(template, encoding="utf-8")
    # Served as it is, it would load a config from the site's root: only the template stays.
    (root / "index.html").unlink()


def installed_version(root: Path) -> str | None:
    try:
        marker = json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict):
        return None
    if marker.get("integrity") != OHIF_INTEGRITY or marker.get("layout") != LAYOUT:
        return None
    return str(marker.get("version"))


def install(root: Path, registry: str | None = None) -> bool:
    """Put the pinned viewer at `root`; False if it was there already."""
    if installed_version(root) == OHIF_VERSION:
        return False
    archive = tarball(registry or os.environ.get("PORTAL_NPM_REGISTRY") or DEFAULT_REGISTRY)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".viewer-", dir=root.parent))
    try:
        _unpack(archive, staging)
        if _patch_public_path(staging) == 0:
            raise BundleError("no webpack public path found to make relative")
        _make_template(staging)
        marker = {
            "package": OHIF_PACKAGE,
            "version": OHIF_VERSION,
            "integrity": OHIF_INTEGRITY,
            "layout": LAYOUT,
        }
        (staging / MARKER).write_text(json.dumps(marker), encoding="utf-8")
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


@lru_cache(maxsize=4)
def _template(root: str) -> str:
    return (Path(root) / TEMPLATE).read_text(encoding="utf-8")


def index_html(root: Path, *, config_url: str, assets_url: str) -> str:
    """The viewer's page for one tenant: its config script, the shared files' location."""
    return (
        _template(str(root))
        .replace("{config_url}", escape(config_url))
        .replace("{assets_url}", escape(assets_url))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m studies.viewer.bundle",
        description=f"Install the OHIF viewer ({OHIF_PACKAGE}@{OHIF_VERSION}, checked against "
        "its pinned sha512) into the portal's viewer root.",
    )
    parser.add_argument(
        "root",
        type=Path,
        nargs="?",
        default=Path(os.environ.get("PORTAL_VIEWER_ROOT", Path(".var") / "viewer")),
        help="where to put it (default: PORTAL_VIEWER_ROOT or .var/viewer)",
    )
    parser.add_argument(
        "--registry",
        help=f"npm registry to fetch from (default: PORTAL_NPM_REGISTRY or {DEFAULT_REGISTRY})",
    )
    args = parser.parse_args(argv)
    try:
        changed = install(args.root, args.registry)
    except (BundleError, OSError) as error:
        print(f"viewer: {error}", file=sys.stderr)
        return 1
    state = "installed" if changed else "already installed"
    print(f"viewer: {OHIF_PACKAGE}@{OHIF_VERSION} {state} in {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
