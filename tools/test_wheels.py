"""Builds the release wheels and tests each on its own CPython (``make test-wheels``).

For every supported version (3.9 to 3.15) the wheel is built with maturin
for manylinux2014 (through zig, which links against glibc 2.17's symbols),
``auditwheel show`` must find a ``manylinux_2_17`` tag (or an older one) for
it, and the test suite runs in a fresh virtual environment holding only that
wheel and the ``unit`` dependency group, from a copy of ``tests/`` so that nothing is
imported from the source tree. CPython 3.9 to 3.13 come from pyenv (or
``PATH``), 3.14 and 3.15 from Debian sid (``tools/debian.py``). The
cp39 wheel is then tested once more on Debian bullseye's CPython 3.9 and
glibc 2.31, which proves the old-glibc claim. Tests marked ``integration``
(servers, Ray, minutes-long runs) or ``core_loop`` (long loops over the Rust
core alone) are left to the main ``make test`` run. A
missing interpreter is an error, never a skip.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import debian
import tomllib
import wire_descriptors

ROOT = Path(__file__).resolve().parent.parent
VERSIONS = ("3.9", "3.10", "3.11", "3.12", "3.13", "3.14", "3.15")
#: Versions taken from Debian sid rather than pyenv.
FROM_SID = ("3.14", "3.15")
#: The newest glibc a wheel may need: manylinux2014's.
GLIBC = (2, 17)


def run(
    argv: list[str],
    *,
    capture: bool = False,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Runs a command, echoed first; a failure ends the run."""
    print("+", " ".join(argv), flush=True)
    try:
        return subprocess.run(argv, check=True, text=True, capture_output=capture, cwd=cwd, env=env)
    except subprocess.CalledProcessError as failed:
        raise SystemExit(f"{' '.join(argv)} failed:\n{failed.stdout}\n{failed.stderr}") from None


def interpreter(version: str) -> Path:
    """CPython ``version``: Debian sid's for the newest, else from PATH or pyenv;
    exits when there is none."""
    if version in FROM_SID:
        return debian.fetch("sid", version)
    on_path = shutil.which(f"python{version}")
    candidates = [Path(on_path)] if on_path else []
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    candidates += sorted(
        Path(pyenv_root, "versions").glob(f"{version}.*/bin/python{version}"),
        key=lambda path: [int(part) for part in re.findall(r"\d+", path.parts[-3])],
        reverse=True,
    )
    for candidate in candidates:
        probe = subprocess.run(
            [str(candidate), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    raise SystemExit(f"CPython {version} not found on PATH or under {pyenv_root}: install it")


def built_wheel(version: str, out: Path) -> Path:
    """The wheel for ``version`` in ``out``; exits when there is none."""
    tag = "cp" + version.replace(".", "")
    found = sorted(out.glob(f"gateway_metrics-*-{tag}-{tag}-*.whl"))
    if len(found) != 1:
        raise SystemExit(f"expected one {tag} wheel in {out}, found {len(found)}")
    return found[0]


def build(version: str, python: Path, out: Path) -> Path:
    """The release wheel for one version."""
    argv = [sys.executable, "-m", "maturin", "build", "--release", "--out", str(out)]
    argv += ["--zig", "--compatibility", "manylinux2014", "-i", str(python)]
    # maturin looks for `zig` on PATH, else runs `python3 -m ziglang` with the first
    # python3 on PATH: this environment's bin folder goes first, where ziglang is.
    environment = dict(os.environ)
    environment["PATH"] = os.pathsep.join(
        [str(Path(sys.executable).parent), environment.get("PATH", "")]
    )
    run(argv, cwd=ROOT, env=environment)
    return built_wheel(version, out)


def platform_tag(wheel: Path) -> str:
    """The manylinux tag ``auditwheel show`` finds the wheel consistent with."""
    report = run([sys.executable, "-m", "auditwheel", "show", str(wheel)], capture=True)
    text = " ".join(report.stdout.split())
    found = re.search(r'platform tag: "(manylinux_(\d+)_(\d+)_\w+)"', text)
    if found is None:
        raise SystemExit(f"auditwheel finds no manylinux tag for {wheel.name}:\n{report.stdout}")
    if (int(found.group(2)), int(found.group(3))) > GLIBC:
        raise SystemExit(f"{wheel.name} needs glibc newer than 2.17: {found.group(1)}")
    return found.group(1)


def dependency_group(name: str) -> list[str]:
    """The requirements of pyproject.toml's dependency group ``name`` (PEP 735),
    its included groups' too: given to pip as they are, so that the older pip of
    a Debian suite's interpreter, which knows no ``--group``, installs them."""
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]
    requirements: list[str] = []
    for entry in groups[name]:
        if isinstance(entry, str):
            requirements.append(entry)
        else:
            requirements += dependency_group(entry["include-group"])
    return requirements


def test(name: str, python: Path, wheel: Path, work: Path) -> tuple[str, float]:
    """Installs the wheel in a fresh environment and runs the suite; returns pytest's summary."""
    started = time.monotonic()
    environment = work / f"venv-{name}"
    venv_python = environment / "bin" / "python"
    if debian.CACHE in python.parents:
        print(f"+ a virtual environment of {python}", flush=True)
        debian.make_venv(python, environment)
    else:
        run([str(python), "-m", "venv", str(environment)])
        run([str(venv_python), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    run([str(venv_python), "-m", "pip", "install", "-q", str(wheel), *dependency_group("unit")])
    copied = work / f"tests-{name}"
    shutil.copytree(ROOT / "tests", copied, ignore=shutil.ignore_patterns("__pycache__"))
    imported = run(
        [str(venv_python), "-c", "import gateway_metrics._core as c; print(c.__file__)"],
        capture=True,
        cwd=work,
    ).stdout.strip()
    if not imported.startswith(str(environment)):
        raise SystemExit(f"{name} imported {imported}, not the installed wheel")
    markers = "not integration and not source_tree and not core_loop"
    pytest = [str(venv_python), "-m", "pytest", copied.name, "-m", markers]
    options = ["-rs", "-p", "no:cacheprovider", "-c", str(work / "pyproject.toml")]
    options += ["--basetemp", str(work / f"tmp-{name}")]
    # The copy of the tests decodes protobuf with the wire schemas compiled here.
    descriptors = wire_descriptors.compile_descriptors()
    result = subprocess.run(
        [*pytest, *options, "--rootdir", str(work)],
        env={**os.environ, "GATEWAY_METRICS_WIRE_DESCRIPTORS": str(descriptors)},
        cwd=work,
        text=True,
        capture_output=True,
        check=False,
    )
    print(result.stdout[-6000:], result.stderr[-3000:], sep="\n", flush=True)
    lines = result.stdout.strip().splitlines()
    summary = lines[-1].strip("= ") if lines else "no output"
    if result.returncode != 0:
        raise SystemExit(f"{name}: the suite failed against {wheel.name}: {summary}")
    return summary, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "target" / "wheels" / "release")
    parser.add_argument("--versions", nargs="+", default=list(VERSIONS))
    parser.add_argument("--jobs", type=int, default=2, help="suites run at once (2)")
    parser.add_argument(
        "--no-old-glibc", action="store_true", help="skip the run on Debian bullseye's glibc 2.31"
    )
    stage = parser.add_mutually_exclusive_group()
    stage.add_argument("--build-only", action="store_true", help="build the wheels, test none")
    stage.add_argument(
        "--prebuilt", action="store_true", help="test the wheels --build-only left in --out"
    )
    args = parser.parse_args()
    pythons = {version: interpreter(version) for version in args.versions}
    if args.build_only:
        shutil.rmtree(args.out, ignore_errors=True)
        for version, python in pythons.items():
            platform_tag(build(version, python, args.out))
        return 0
    bullseye = None
    if "3.9" in pythons and not args.no_old_glibc:
        bullseye = debian.fetch("bullseye", "3.9")
    if not args.prebuilt:
        shutil.rmtree(args.out, ignore_errors=True)
    tags: dict[Path, str] = {}
    runs: list[tuple[str, Path, Path]] = []
    futures: list[concurrent.futures.Future[tuple[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="gwm-wheels-") as work:
        shutil.copy(ROOT / "pyproject.toml", Path(work) / "pyproject.toml")
        # Each suite is one mostly single-threaded interpreter, and so is the
        # end of a release build (fat LTO, one codegen unit): a wheel's suites
        # start as soon as it is built, one at a time beside the next build,
        # then `jobs` at once, so the machine's cores (two here) stay busy
        # without timing-sensitive tests sharing a core.
        building = not args.prebuilt
        slots = threading.Semaphore(max(args.jobs - 1, 1) if building else args.jobs)

        def test_in_slot(name: str, python: Path, wheel: Path) -> tuple[str, float]:
            with slots:
                return test(name, python, wheel, Path(work))

        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            for version, python in pythons.items():
                if building:
                    wheel = build(version, python, args.out)
                else:
                    wheel = built_wheel(version, args.out)
                tags[wheel] = platform_tag(wheel)
                mine = [(f"CPython {version}", python, wheel)]
                if version == "3.9" and bullseye is not None:
                    mine.append(("CPython 3.9 of Debian bullseye, glibc 2.31", bullseye, wheel))
                for name, interpreter_path, built in mine:
                    index = f"{len(runs)}"
                    runs.append((name, interpreter_path, built))
                    futures.append(pool.submit(test_in_slot, index, interpreter_path, built))
            for _ in range(args.jobs - max(args.jobs - 1, 1) if building else 0):
                slots.release()
            results = [future.result() for future in futures]
    rows = [
        (name, wheel.name, tags[wheel], summary, seconds)
        for (name, _, wheel), (summary, seconds) in zip(runs, results)
    ]
    print("\nwheels tested:")
    for name, wheel_name, tag, summary, seconds in rows:
        print(f"  {name}: {wheel_name} ({tag}): {summary} [{seconds:.0f} s]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
