"""The benchmarks run end to end in tiny settings: their tables have the right shape and the
properties a wrong implementation would break (numbers not timed here)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def test_vae_throughput_runs_and_fit_matches_the_plain_loop():
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "vae_throughput.py"), "--repeats", "1",
         "--batch-sizes", "1024", "--routes", "elbo=fused", "--quality-epochs", "1",
         "--quality-seeds", "0", "--example-epochs", "0", "--train-size", "6000",
         "--threads", "1"],
        capture_output=True, text=True, timeout=600, cwd=BENCHMARKS,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    out = completed.stdout
    assert "batch 1024: 6000 examples, 6 steps per epoch" in out
    assert re.search(r"\| fit, elbo=fused \| [\d.]+ \| [\d,]+ \| [\d.]+ \|", out)
    # fit draws the seed's random numbers in the plain loop's order: the same test ELBO
    seed_row = re.search(r"\| 0 \| (-[\d.]+) \| (-[\d.]+) \| ([+-][\d.]+) \| (-[\d.]+) \|", out)
    fused, plain, difference, bfloat16 = map(float, seed_row.groups())
    assert abs(difference) <= 0.002 and fused < -100 and plain < -100
    # mixed precision: other round-off (tests/test_reliability.py), the same objective
    assert abs(bfloat16 - fused) < 0.5
    assert re.search(r"\| fit, elbo=fused, precision=bfloat16 \| [\d.]+ \|", out)


def test_iwae_table1_runs_resumes_and_reuses_finished_cells(tmp_path):
    """A tiny stand-in for the paper's protocol (one stage, mnist5k rows, small nets): the
    table has the paper's number beside the measured one; a second run trains nothing."""
    command = [sys.executable, str(BENCHMARKS / "iwae_table1.py"), "--stages", "1",
               "--cells", "vae1,iwae5", "--eval-particles", "5", "--out", str(tmp_path),
               "--quiet", "--set", 'data.dataset="mnist5k"', "--set", "data.train_size=100",
               "--set", "data.test_size=20", "--set", "model.hidden=[8]",
               "--set", "model.latent_dim=2"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=BENCHMARKS)
    assert first.returncode == 0, first.stderr[-2000:]
    rows = re.findall(r"\| 1 \| (vae1|iwae5) \| ([\d.]+) \| ([\d.]+) \| (-[\d.]+) \| 1 \|",
                      first.stdout)
    assert [(cell, paper) for cell, paper, _, _ in rows] == [("vae1", "86.76"), ("iwae5", "85.54")]
    # K = 5 importance sampling is at least the one-particle ELBO's mean: NLL <= -ELBO
    assert all(float(nll) <= -float(elbo) + 1e-6 for _, _, nll, elbo in rows)
    second = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=BENCHMARKS)
    assert second.returncode == 0 and "layer(s)," not in second.stdout  # none trained again
    assert second.stdout == (tmp_path / "table1.md").read_text()
    assert re.findall(r"\| 1 \| (?:vae1|iwae5) .*", second.stdout) == re.findall(
        r"\| 1 \| (?:vae1|iwae5) .*", first.stdout)
    # one cell asked for alone still gets the table of every finished cell, also in --markdown
    alone = subprocess.run([*command[:command.index("--cells")], "--cells", "iwae5",
                            *command[command.index("--cells") + 2:], "--markdown",
                            str(tmp_path / "published.md")],
                           capture_output=True, text=True, timeout=600, cwd=BENCHMARKS)
    assert alone.returncode == 0 and alone.stdout == second.stdout
    assert (tmp_path / "published.md").read_text() == second.stdout
    # a finished cell of another length is never passed off as this budget's
    longer = subprocess.run([*command[:3], "2", *command[4:]], capture_output=True, text=True,
                            timeout=600, cwd=BENCHMARKS)
    assert longer.returncode == 1 and "holds a finished cell of 1 epochs, not the 4" in (
        longer.stderr)


@pytest.mark.slow
def test_loo_exports_quick_tables_and_loo_agrees_with_the_exact_numbers(tmp_path):
    """``--quick``: both tables in the markdown, and LOO says what the exports promise: a
    point estimate's draws pay p_loo ~ 3 for (a, b, mu) and elpd_loo = lppd - p_loo sits by
    the exact training log-likelihood; the VAE's p_loo ~ 0 (independent K = 50 estimates per
    draw would give sum_i Var log p_hat(x_i) ~ 30 here) and elpd_loo per image is the
    importance-sampled log p(x), not the conditional log p(x | z) the old export held."""
    markdown = tmp_path / "loo.md"
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "loo_exports.py"), "--quick", "--markdown",
         str(markdown)], capture_output=True, text=True, timeout=600, cwd=BENCHMARKS)
    assert completed.returncode == 0, completed.stderr[-2000:]
    text = markdown.read_text()
    assert completed.stdout == text
    lines = text.splitlines()
    assert lines[0] == "<!-- written by benchmarks/loo_exports.py --quick -->"
    assert re.match(r"PSIS-LOO .* measured \d{4}-\d\d-\d\d on the 2-core CPU\. ", lines[1])
    number = r"(-?[\d.]+|inf)"
    toy = {m[0]: m[1:] for m in re.findall(
        rf"^\| (mle|nuts|iwae|svi) \| {number} \({number}\) \| {number} \| {number}(?: \(warns\))?"
        rf" \| {number} \| {number} \| (\d) \| {number} \({number}\) \| [\d.]+ \|$", text, re.M)}
    assert list(toy) == ["mle", "nuts", "iwae", "svi"]
    assert sorted(int(row[6]) for row in toy.values()) == [0, 1, 2, 3]
    for name in ("mle", "iwae", "svi"):
        elpd, _, p_loo, k, train, _, _, _, _ = map(float, toy[name])
        assert 2 < p_loo < 4.5 and k < 0.7
        assert abs(elpd + p_loo - train) < 1
    vae = {m[0]: list(map(float, m[1:6])) for m in re.findall(
        r"^\| (iwae|meanfield|trace) \| (-[\d.]+) \| ([\d.]+) \| (-?[\d.]+) \| (-[\d.]+) "
        r"\| (-[\d.]+) \| (\d) \| [\d.]+ \| \d+ \| [\d.]+ \|$", text, re.M)}
    assert list(vae) == ["iwae", "meanfield", "trace"]
    assert "| ELBO | elpd_loo / image | p_loo | max Pareto k | IS log p(x), K = 50 |" in text
    for elpd, p_loo, k, estimate, conditional in vae.values():
        assert p_loo < 20 / 4 and k < 0.7
        assert abs(elpd - estimate) < 1.5 and abs(elpd - estimate) < abs(elpd - conditional)
    assert re.search(r"^Toy: az\.compare's order (\w+, ){3}\w+; order by exact test", text, re.M)
    assert re.search(r"^VAE: az\.compare's order (\w+, ){2}\w+; order by importance", text, re.M)


def test_toy_routes_tables_the_routes_and_the_mle_maximizes_the_likelihood(tmp_path):
    """Quick settings, mle and svi: the table has their rows, and no fitted theta beats the
    exact maximum likelihood's log p(x) on the same points (SVI maximizes a lower bound)."""
    markdown = tmp_path / "toy_routes.md"
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "toy_routes.py"), "--quick", "--routes", "mle,svi",
         "--out", str(tmp_path / "runs"), "--markdown", str(markdown)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    text = markdown.read_text()
    assert text.startswith("<!-- written by benchmarks/toy_routes.py -->\n")
    rows = {row[0].split("`")[1]: row for row in
            (line.strip("|").split(" | ") for line in text.splitlines()
             if line.startswith("| `"))}
    assert list(rows) == ["mle", "svi"]
    log_lik = {name: float(row[4]) for name, row in rows.items()}
    assert log_lik["mle"] >= log_lik["svi"]
    assert float(rows["svi"][5]) < log_lik["svi"]  # the ELBO lies below log p(x)
    assert "`mle` standard errors (Hessian)" in text


def test_step_profile_splits_an_epoch_into_kinds_that_add_up(monkeypatch):
    """Every operator's time goes to exactly one kind: the kinds add up to the total; the
    matrix products and the binarization's draws are there in both precisions, and only
    bfloat16 spends time on casts of the weights."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import step_profile

    assert step_profile.kind_of("aten::_foreach_norm") == "NaN guard"
    assert step_profile.kind_of("aten::_foreach_add_") == "Adam"
    assert step_profile.kind_of("aten::softplus") == "other"
    assert step_profile.kind_of("## Call CompiledFxGraph fzz1 ##") == "generated kernels"
    assert step_profile.kind_of("Optimizer.step#Adam.step") is None  # a range, not an operator
    result = step_profile.main(["--batch-size", "64", "--train-size", "256", "--threads", "1",
                                "--repeats", "2"])
    (full, steps), (half, _) = result["rows"]["float32"], result["rows"]["bfloat16"]
    assert steps == 4
    for times in (full, half):
        assert set(times) == {*step_profile.KINDS, "other"}
        assert times["matrix products"] > 0 and times["random draws"] > 0
        assert times["NaN guard"] > 0 and times["Adam"] > 0
        assert times["generated kernels"] == 0  # nothing compiled
    assert half["casts"] > full["casts"]
    assert "| total | 100.0% |" in result["table"]


def test_turns_in_a_shuffled_order_run_every_route_every_turn(monkeypatch):
    """``take_turns`` with a seed: every route once per turn, the orders differ between
    turns (no route always follows the same one), what is kept is each route's own."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from common import take_turns

    calls = []
    routes = {name: (lambda name=name: calls.append(name) or float(ord(name)))
              for name in "abcde"}
    measured = take_turns(6, routes, shuffle_seed=0)
    assert measured == {name: [float(ord(name))] * 6 for name in "abcde"}
    turns = [tuple(calls[i:i + 5]) for i in range(0, 30, 5)]
    assert all(sorted(turn) == list("abcde") for turn in turns)
    assert len(set(turns)) > 1
    calls.clear()
    take_turns(2, routes)
    assert calls == list("abcde") * 2  # no seed: the given order
