"""Builds the release wheels and tests each on its own CPython (``make test-wheels``).

For every supported version (3.9 to 3.13) the wheel is built with maturin,
``auditwheel show`` must find a manylinux tag for it, and the test suite runs
in a fresh virtual environment holding only that wheel and the ``unit`` extra,
from a copy of ``tests/`` so that nothing is imported from the source tree.
Tests marked ``integration`` (servers, Ray, minutes-long runs) are left to the
main ``make test`` run. A missing interpreter is an error, never a skip.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERSIONS = ("3.9", "3.10", "3.11", "3.12", "3.13")


def run(
    argv: list[str], *, capture: bool = False, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs a command, echoed first; a failure ends the run."""
    print("+", " ".join(argv), flush=True)
    return subprocess.run(argv, check=True, text=True, capture_output=capture, cwd=cwd)


def interpreter(version: str) -> Path:
    """CPython ``version`` from PATH or pyenv; exits when there is none."""
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


def build(pythons: dict[str, Path], out: Path) -> dict[str, Path]:
    """One release wheel per version, by tag."""
    shutil.rmtree(out, ignore_errors=True)
    argv = [sys.executable, "-m", "maturin", "build", "--release", "--out", str(out)]
    for python in pythons.values():
        argv += ["-i", str(python)]
    run(argv, cwd=ROOT)
    wheels = {}
    for version in pythons:
        tag = "cp" + version.replace(".", "")
        [wheel] = out.glob(f"gateway_metrics-*-{tag}-{tag}-*.whl")
        wheels[version] = wheel
    return wheels


def platform_tag(wheel: Path) -> str:
    """The manylinux tag ``auditwheel show`` finds the wheel consistent with."""
    report = run([sys.executable, "-m", "auditwheel", "show", str(wheel)], capture=True)
    text = " ".join(report.stdout.split())
    found = re.search(r'platform tag: "(manylinux_\d+_\d+_\w+)"', text)
    if found is None:
        raise SystemExit(f"auditwheel finds no manylinux tag for {wheel.name}:\n{report.stdout}")
    return found.group(1)


def test(version: str, python: Path, wheel: Path, work: Path) -> tuple[str, float]:
    """Installs the wheel in a fresh environment and runs the suite; returns pytest's summary."""
    started = time.monotonic()
    environment = work / f"venv-{version}"
    run([str(python), "-m", "venv", str(environment)])
    venv_python = environment / "bin" / "python"
    run([str(venv_python), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    run([str(venv_python), "-m", "pip", "install", "-q", f"{wheel}[unit]"])
    copied = work / f"tests-{version}"
    shutil.copytree(ROOT / "tests", copied, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", work / "pyproject.toml")
    imported = run(
        [str(venv_python), "-c", "import gateway_metrics._core as c; print(c.__file__)"],
        capture=True,
        cwd=work,
    ).stdout.strip()
    if not imported.startswith(str(environment)):
        raise SystemExit(f"CPython {version} imported {imported}, not the installed wheel")
    pytest = [str(venv_python), "-m", "pytest", copied.name, "-m", "not integration"]
    options = ["-rs", "-p", "no:cacheprovider", "-c", str(work / "pyproject.toml")]
    result = subprocess.run(
        [*pytest, *options, "--rootdir", str(work)],
        cwd=work,
        text=True,
        capture_output=True,
        check=False,
    )
    print(result.stdout[-6000:], result.stderr[-3000:], sep="\n", flush=True)
    lines = result.stdout.strip().splitlines()
    summary = lines[-1].strip("= ") if lines else "no output"
    if result.returncode != 0:
        raise SystemExit(f"CPython {version}: the suite failed against {wheel.name}: {summary}")
    return summary, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "target" / "wheels" / "release")
    parser.add_argument("--versions", nargs="+", default=list(VERSIONS))
    args = parser.parse_args()
    pythons = {version: interpreter(version) for version in args.versions}
    wheels = build(pythons, args.out)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gwm-wheels-") as work:
        for version, python in pythons.items():
            tag = platform_tag(wheels[version])
            summary, seconds = test(version, python, wheels[version], Path(work))
            rows.append((version, wheels[version].name, tag, summary, seconds))
    print("\nwheels tested:")
    for version, name, tag, summary, seconds in rows:
        print(f"  CPython {version}: {name} ({tag}): {summary} [{seconds:.0f} s]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
