"""Plugins: ``--import MODULE`` and the ``pyro_vae.plugins`` entry points register names that
every command accepts, and a checkpoint names the plugins it needs (run in subprocesses, so
the registrations never leak into this test session's registries)."""

import os
import subprocess
import sys
from pathlib import Path

PYRO_VAE = Path(sys.executable).parent / "pyro-vae"
PLUGIN = '''
import pyro.distributions as dist
from pyro_vae.priors import PRIORS, LocationScalePrior

@PRIORS.register("{name}")
def prior(latent_dim: int):
    return LocationScalePrior(latent_dim, dist.Laplace)
'''
QUICK = ["--dataset", "digits", "--epochs", "1", "--eval-particles", "5", "--quiet"]


def pyro_vae(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(PYRO_VAE), *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=env)


def test_an_installed_entry_point_is_loaded_by_every_command(tmp_path):
    """A distribution on the path whose entry_points.txt names a module in the group."""
    site = tmp_path / "site"
    (site / "fake_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "fake_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-plugin\nVersion: 1.0\n")
    (site / "fake_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[pyro_vae.plugins]\nlaplace_too = fake_plugin_priors\n")
    (site / "fake_plugin_priors.py").write_text(PLUGIN.format(name="laplace_too"))
    env = {**os.environ, "PYTHONPATH": str(site)}
    trained = pyro_vae("train", *QUICK, "--set", "prior.name=laplace_too", "--out", "run",
                       cwd=tmp_path, env=env)
    assert trained.returncode == 0, trained.stderr[-2000:]
    evaluated = pyro_vae("evaluate", "--checkpoint", "run/checkpoint.pt", "--eval-particles", "5",
                         "--json", cwd=tmp_path, env=env)
    assert evaluated.returncode == 0 and '"test_log_likelihood"' in evaluated.stdout
    # the package uninstalled: the checkpoint names the module it needs, nothing is imported
    gone = pyro_vae("evaluate", "--checkpoint", "run/checkpoint.pt", cwd=tmp_path)
    assert gone.returncode == 2
    assert "made with plugin module(s) fake_plugin_priors" in gone.stderr
    assert len(gone.stderr.strip().splitlines()) == 1


def test_a_missing_plugin_module_and_a_plugin_missing_its_own_import(tmp_path):
    missing = pyro_vae("--import", "no_such_plugin", "train", "--epochs", "1", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr == (
        "pyro-vae: error: --import no_such_plugin: no module 'no_such_plugin' on the path "
        "(give a module name, e.g. my_priors for ./my_priors.py)\n")
    # a plugin that fails inside is the plugin's bug: its traceback is shown, not hidden
    (tmp_path / "broken.py").write_text("import no_such_dependency\n")
    broken = pyro_vae("--import", "broken", "train", "--epochs", "1", cwd=tmp_path)
    assert broken.returncode == 1
    assert "ModuleNotFoundError: No module named 'no_such_dependency'" in broken.stderr
    # --import belongs before the command, where its names can reach the command's choices
    late = pyro_vae("train", "--import", "broken", cwd=tmp_path)
    assert late.returncode == 2 and "unrecognized arguments: --import broken" in late.stderr


def test_a_registered_name_is_a_choice_of_the_parser(tmp_path):
    """--elbo's choices are built after the plugins are imported."""
    (tmp_path / "my_elbo.py").write_text(
        "from pyro.infer import Trace_ELBO\nfrom pyro_vae.elbos import ELBOS\n"
        "ELBOS.register('my_trace')(lambda num_particles=1, **_: Trace_ELBO(num_particles))\n")
    helped = pyro_vae("--import", "my_elbo", "train", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "my_trace" in helped.stdout
