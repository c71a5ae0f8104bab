"""The built wheel is the whole tool: installed outside the checkout, it trains a shipped config
by name from an empty folder."""

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*argv, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the checkout's files that git does not ignore (a build
    writes into its source tree)."""
    source = tmp_path_factory.mktemp("source")
    files = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                cwd=ROOT).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    # the build backend is already installed here: no download, no isolated environment
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
        "--wheel-dir", str(dist), str(source))
    (built,) = dist.glob("pyro_vae-*.whl")
    return built


def test_the_wheel_carries_the_package_and_its_shipped_configs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"pyro_vae/configs/{p.name}" for p in (ROOT / "pyro_vae/configs").glob("*.toml")}
    assert shipped and shipped <= names
    assert "pyro_vae/cli/main.py" in names
    assert not any(name.startswith(("tests/", "benchmarks/", "examples/")) for name in names)


@pytest.mark.slow
def test_the_installed_wheel_trains_a_named_config_from_an_empty_folder(wheel, tmp_path):
    """A fresh virtual environment gets the wheel alone (``--no-deps``); its dependencies are
    those already installed for the tests, reached through a path file, so nothing is
    downloaded and the checkout is never on the path."""
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    (Path(site.stdout.strip()) / "dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    run(str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel))
    empty = tmp_path / "empty"
    empty.mkdir()
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = run(str(python), "-c", "import pyro_vae; print(pyro_vae.__file__)", cwd=empty,
                env=environment)
    assert Path(where.stdout.strip()).is_relative_to(env_dir)  # the wheel's copy, not the checkout
    trained = run(str(env_dir / "bin" / "pyro-vae"), "train", "--config", "vae_mnist5k",
                  "--epochs", "1", "--quiet", cwd=empty, env=environment)
    assert "1 epochs in" in trained.stdout
    (run_folder,) = (empty / "runs").iterdir()
    written = {path.name for path in run_folder.iterdir()}
    assert {"metrics.json", "checkpoint.pt", "config.toml"} <= written
    listed = run(str(env_dir / "bin" / "pyro-vae"), "configs", cwd=empty, env=environment)
    assert "vae_vamp_prior" in listed.stdout
