"""The wheel ships the widgets' browser side (issue 7): ``widgets/*.js`` and ``*.css`` inside it, as
``moat_nb/_widgets`` (pyproject's ``force-include``), and the installed package loads them from
there — not from a source checkout that happens to sit next to it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ASSETS = sorted(p.name for p in (ROOT / "widgets").iterdir() if p.suffix in (".js", ".css"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", str(ROOT), "-w", str(out)]
    if importlib.util.find_spec("hatchling") is not None:
        command.insert(5, "--no-build-isolation")  # the build backend is here: no download
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = out.glob("moat_nb-*.whl")
    return built


def test_the_wheel_carries_every_widget_module_and_stylesheet(wheel: Path) -> None:
    assert {"body_editor.js", "body_editor.css", "data_table.js", "data_table.css", "moat.css"} <= set(ASSETS)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for name in ASSETS:
            assert f"moat_nb/_widgets/{name}" in names, name
            # Byte for byte what the repository holds.
            assert z.read(f"moat_nb/_widgets/{name}") == (ROOT / "widgets" / name).read_bytes()
        assert "moat_nb/assets.py" in names and "moat_nb/widgets.py" in names


def test_an_installed_wheel_loads_its_own_assets(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile"]
    done = subprocess.run(
        [*install, "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout + done.stderr
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import moat_nb, moat_nb.assets as a;"
        "assert moat_nb.__file__.startswith(sys.argv[1]), moat_nb.__file__;"
        "print(a.asset_dirs()[0]);"
        "print(len(a.asset('body_editor.js')), len(a.asset('data_table.css')))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [sys.executable, "-c", probe, str(site)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    folder, sizes = run.stdout.splitlines()
    assert Path(folder) == site / "moat_nb" / "_widgets" and not (site / "widgets").exists()
    assert sizes.split() == [
        str(len((ROOT / "widgets" / "body_editor.js").read_text(encoding="utf-8"))),
        str(len((ROOT / "widgets" / "data_table.css").read_text(encoding="utf-8"))),
    ]
