"""The command line end to end on a tiny run: train, evaluate, sample, bad input."""

import argparse
import json

import numpy as np
import pytest
import torch

import pyro_vae
from pyro_vae.cli import main
from pyro_vae.cli.main import build_parser
from pyro_vae.experiments.runs import strict_json
from pyro_vae.train.checkpoint import load_checkpoint

TINY = ["--dataset", "digits", "--epochs", "2", "--latent-dim", "2", "--set", "model.hidden=[32]",
        "--eval-particles", "20", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


def last_json_line(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_train_writes_metrics_checkpoint_figures(run):
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("train_elbo", "test_elbo", "test_log_likelihood", "num_particles",
                "seconds_per_epoch", "examples_per_second", "config"):
        assert key in metrics
    assert len(metrics["train_elbo"]) == len(metrics["seconds_per_epoch"]) == 2
    assert metrics["num_particles"] == 20
    assert metrics["test_log_likelihood"] >= metrics["test_elbo"]
    for name in ("samples", "reconstructions", "latent", "curves"):
        assert (run / f"{name}.png").stat().st_size > 1000
    assert (run / "config.toml").exists()
    payload = load_checkpoint(run / "checkpoint.pt")  # weights_only=True inside
    assert payload["epoch"] == 2 and "optimizer_state" in payload


def test_checkpoint_is_plain_data(run):
    torch.load(run / "checkpoint.pt", weights_only=True)


def test_evaluate_reproduces_the_training_numbers(run, capsys):
    metrics = json.loads((run / "metrics.json").read_text())
    assert main(["evaluate", "--checkpoint", str(run / "checkpoint.pt"),
                 "--eval-particles", "20", "--json"]) == 0
    again = last_json_line(capsys)
    # same model, same test draw, same seed: the same numbers
    assert again["test_elbo"] == pytest.approx(metrics["test_elbo"], abs=1e-4)
    assert again["test_log_likelihood"] == pytest.approx(metrics["test_log_likelihood"], abs=1e-4)


def test_evaluate_on_a_user_file(run, tmp_path, capsys):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).random((12, 64)))
    assert main(["evaluate", "--checkpoint", str(run / "checkpoint.pt"), "--data", str(path),
                 "--eval-particles", "5", "--json"]) == 0
    assert last_json_line(capsys)["num_examples"] == 12


def test_sample(run, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", str(run / "checkpoint.pt"), "-n", "16",
                 "--out", str(out), "--json"]) == 0
    assert out.stat().st_size > 1000 and last_json_line(capsys)["n"] == 16


def test_evaluate_and_sample_never_replace_a_training_runs_files(run, tmp_path, capsys):
    """Refused before any work, with the run folder byte for byte as it was."""
    before = {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()}
    checkpoint = str(run / "checkpoint.pt")
    assert main(["evaluate", "--checkpoint", checkpoint, "--out", str(run)]) == 2
    assert main(["sample", "--checkpoint", checkpoint, "--out", str(run / "samples.png")]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()} == before
    # a file of its own name beside the run's, or another folder, is fine
    assert main(["sample", "--checkpoint", checkpoint, "-n", "4",
                 "--out", str(tmp_path / "more.png")]) == 0
    evaluated = tmp_path / "evaluation"
    assert main(["evaluate", "--checkpoint", checkpoint, "--eval-particles", "2",
                 "--out", str(evaluated)]) == 0
    assert json.loads((evaluated / "metrics.json").read_text())["num_particles"] == 2
    # evaluate's own folder is a run folder too: a second evaluation asks for --overwrite
    assert main(["evaluate", "--checkpoint", checkpoint, "--out", str(evaluated)]) == 2
    assert main(["evaluate", "--checkpoint", checkpoint, "--eval-particles", "3",
                 "--out", str(evaluated), "--overwrite"]) == 0
    assert json.loads((evaluated / "metrics.json").read_text())["num_particles"] == 3


def test_json_is_the_last_stdout_line_after_the_summary(tmp_path, capsys):
    assert main(["train", *TINY, "--epochs", "1", "--out", str(tmp_path), "--json"]) == 0
    *summary, line = capsys.readouterr().out.strip().splitlines()
    metrics = json.loads(line)
    assert metrics["num_train"] == 1497
    assert summary == [
        f"1 epochs in {metrics['seconds_per_epoch'][0]:.0f} s (meanfield ELBO); test set of 300: "
        f"ELBO {metrics['test_elbo']:.2f}, log p(x) {metrics['test_log_likelihood']:.2f} (K=20) "
        f"nats per example; {metrics['active_units']} active latent units",
        f"run folder: {tmp_path}",
    ]


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"pyro-vae {pyro_vae.__version__}\n"


def test_refuses_an_out_folder_holding_another_run(run, capsys):
    assert main(["train", *TINY, "--out", str(run)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_garbage_checkpoint_is_refused(tmp_path, capsys):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint at all")
    assert main(["evaluate", "--checkpoint", str(bad)]) == 2
    assert "not a readable pyro-vae checkpoint" in capsys.readouterr().err


def _commands():
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices


# flags that mean one thing wherever they appear, with the one help text that says what
# (--idata and --out share a meaning too; their help names what each command writes)
SHARED = ("--train-particles", "--eval-particles", "--seed", "--overwrite", "--json", "--debug")


def test_every_flag_has_a_help_line_and_shared_flags_one_meaning():
    helps: dict[str, set[str]] = {}
    for name, command in _commands().items():
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings} has no help line"
            for flag in action.option_strings:
                helps.setdefault(flag, set()).add(action.help)
        flags = {flag for action in command._actions for flag in action.option_strings}
        # one vocabulary: no flag that another command spells differently
        assert not flags & {"--num-particles", "--particles"}, name
    for flag in SHARED:
        assert len(helps[flag]) == 1, (flag, helps[flag])
    assert set(_commands()) == {"train", "evaluate", "sample", "configs", "toy", "gmm",
                                "gmm-predict", "compare", "gaps"}


def test_json_output_is_strict_json():
    """A diverged number is null, never the NaN that standard JSON parsers reject."""
    text = strict_json({"a": float("nan"), "b": [1.5, float("inf")], "c": {"d": -float("inf")},
                        "e": (2, "x")})
    assert text == '{"a": null, "b": [1.5, null], "c": {"d": null}, "e": [2, "x"]}'
    json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))


def test_without_out_every_run_gets_a_new_folder(tmp_path, monkeypatch, capsys):
    """The default --out is new each time: a second run is never refused (nor overwrites)."""
    monkeypatch.chdir(tmp_path)
    command = ["gmm", "--simulate", "100,2,2", "--components", "2", "--restarts", "1"]
    assert main(command) == 0 and main(command) == 0
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(folders) == 2 and all(name.startswith("gmm-20") for name in folders)
    assert all((tmp_path / "runs" / name / "metrics.json").is_file() for name in folders)
    assert f"run folder: runs/{folders[1]}" in capsys.readouterr().out
