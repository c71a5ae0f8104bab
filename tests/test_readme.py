"""The README is executed, not written: its generated blocks equal the files the benchmarks
wrote, and its Python snippet prints the numbers its results table promises."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

from pyro_vae.config import load_config
from pyro_vae.train.compilation import COMPILE_PAYS_AFTER

ROOT = Path(__file__).resolve().parents[1]
SYNC = ROOT / "tools" / "sync_readme.py"
README = (ROOT / "README.md").read_text()


def sync(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SYNC), *args], capture_output=True, text=True,
                          timeout=60)


def test_every_generated_block_equals_its_source_file():
    names = re.findall(r"<!-- begin (\S+) -->", README)
    assert names and all((ROOT / name).is_file() for name in names)
    result = sync("--check")
    assert result.returncode == 0, result.stderr


def test_a_drifted_block_is_named_and_sync_repairs_it(tmp_path):
    (tmp_path / "table.md").write_text("| a | 1.00 |\n")
    readme = tmp_path / "README.md"
    block = "<!-- begin table.md -->\n| a | {} |\n<!-- end table.md -->\n"
    readme.write_text("intro\n" + block.format("0.99") + "end\n")
    drift = sync("--check", "--readme", str(readme))
    assert drift.returncode == 1 and "README block table.md differs" in drift.stderr
    assert "0.99" in readme.read_text()  # --check changes nothing
    assert sync("--readme", str(readme)).returncode == 0
    assert readme.read_text() == "intro\n" + block.format("1.00") + "end\n"
    assert sync("--check", "--readme", str(readme)).returncode == 0


def test_the_python_snippet_prints_the_demo_row_of_the_results_table(tmp_path):
    """Runs the "In Python" block as written (30 epochs on mnist5k, about half a minute)."""
    snippet = re.search(r"## In Python\n+```python\n(.*?)```", README, re.S)[1]
    run = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    elbo, log_lik = re.fullmatch(r"test ELBO (-[\d.]+), test log p\(x\) (-[\d.]+)\n",
                                 run.stdout).groups()
    demo_row = re.search(r"\| `make demo` .*\| (-[\d.]+) \| (-[\d.]+) \|\n", README)
    assert demo_row.groups() == (elbo, log_lik)
    assert f"It prints `test ELBO {elbo}, test log p(x) {log_lik}`" in " ".join(README.split())


def test_the_custom_prior_example_runs_from_the_shell(tmp_path):
    """The README's plugin module and commands, verbatim but for a one-epoch run on digits."""
    section = README[README.index("Adding a prior is one function"):]
    (tmp_path / "my_priors.py").write_text(re.search(r"```python\n(.*?)```", section, re.S)[1])
    commands = re.search(r"```bash\n(.*?)```", section, re.S)[1].splitlines()
    quick = ["--dataset", "digits", "--epochs", "1", "--eval-particles", "5", "--quiet"]
    pyro_vae = Path(sys.executable).parent / "pyro-vae"
    for line in commands:
        words = line.split()
        assert words[0] == "pyro-vae"
        extra = quick if "train" in words else ["--eval-particles", "5"]
        run = subprocess.run([str(pyro_vae), *words[1:], *extra], capture_output=True,
                             text=True, timeout=300, cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]
    metrics = (tmp_path / "runs" / "cauchy" / "eval" / "metrics.json").read_text()
    assert '"test_log_likelihood"' in metrics
    evaluate = commands[1].split()[3:]  # without --import my_priors, and without its --out
    evaluate = evaluate[:evaluate.index("--out")]
    without = subprocess.run([str(pyro_vae), *evaluate], capture_output=True, text=True,
                             timeout=300, cwd=tmp_path)
    assert without.returncode == 2
    assert without.stderr.strip().endswith("plugin module(s) my_priors: run pyro-vae "
                                           "--import my_priors ...")


def test_results_table_renders_runs_and_names_its_command(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({
        "seconds_per_epoch": [1.25, 1.5], "elbo": "meanfield", "test_elbo": -100.004,
        "test_log_likelihood": -95.5, "num_particles": 5000}))
    out = tmp_path / "table.md"
    made = subprocess.run([sys.executable, str(ROOT / "tools" / "results_table.py"), "--out",
                           str(out), "--title", "Runs", "--row", f"default={run}"],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == ("<!-- written by tools/results_table.py from the metrics.json of "
                        f"default: {run} -->")
    assert lines[-1] == "| default | 2 | 3 | meanfield | -100.00 | -95.50 | 5000 | 4.50 | n/a |"


def _rows(name: str) -> list[list[str]]:
    """The table rows of a docs/results file, as lists of cells."""
    text = (ROOT / "docs" / "results" / name).read_text()
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| run ")
            and not line.startswith("| layers ")]


def test_the_prose_agrees_with_the_tables_it_summarizes():
    """Differences the README states in words, recomputed from the generated tables."""
    nll = {(row[0], row[1]): float(row[3]) for row in _rows("iwae_table1.md")}
    short = [float(row[3]) - float(row[2]) for row in _rows("iwae_table1.md")]
    flat = " ".join(README.split())
    iwae_gain = nll["1", "vae1"] - nll["1", "iwae5"]
    depth_gain = nll["1", "vae1"] - nll["2", "vae1"]
    assert f"IWAE k=5 is {iwae_gain:.2f} nats better than VAE k=1" in flat
    assert f"two stochastic layers are {depth_gain:.2f} nats better" in flat
    assert f"each {min(short):.1f}-{max(short):.1f} nats short of the paper's" in flat
    default = _rows("mnist_vae.md")[0]
    assert abs(-float(default[5]) - nll["1", "vae1"]) < 1  # "within a nat"
    assert f"{default[8]} of its 50 latent units are active" in flat
    assert min(nll.values()) == nll["1", "iwae5"]  # "the best shipped config at this budget"
    configs = {row[0]: row for row in _rows("configs.md")}
    conv10, conv30 = configs["`vae_digits_conv` (digits 8x8, conv)"], configs[
        "`vae_digits_conv`, its own 30 epochs"]
    assert (conv10[8], conv10[7], conv30[8]) == ("1", "0.08", "8")  # "one active unit, 0.08"
    sweep = [float(row[5]) for row in _rows("conv_sweep.md")]
    assert max(sweep) == sweep[2]  # "none of which beat plain longer training" (300 epochs)
    bias = {row[0]: float(row[5]) for row in _rows("decoder_bias.md")}
    gain = [bias[f"mnist5k, data_mean, seed {s}"] - bias[f"mnist5k, zero, seed {s}"] for s in "012"]
    full = bias["full MNIST, data_mean, seed 0"] - bias["full MNIST, zero, seed 0"]
    assert f"{sum(gain) / 3:+.2f} nats of log p(x) on mnist5k (mean of 3 seeds) but {full:+.2f} " \
        "on full MNIST" in flat


def test_every_reliability_guarantee_names_tests_that_exist():
    """The Reliability section lists each guarantee with the tests that prove it: every bullet
    names at least one ``tests/FILE.py::test_name``, and each is a test function of that file."""
    section = README.split("## Reliability", 1)[1].split("\n## ", 1)[0]
    bullets = re.split(r"\n- ", section)[1:]
    assert len(bullets) >= 10
    for bullet in bullets:
        named = re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`", bullet)
        assert named, f"a guarantee without a test: {bullet[:60]}"
        for path, name in named:
            tree = ast.parse((ROOT / path).read_text())
            tests = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
            assert name in tests, f"{path}::{name} does not exist"


def test_the_mixture_snippet_prints_what_its_comments_say(tmp_path):
    """The "A mixture you can keep" block, run as written: each printed line equals the comment
    on the line that prints it."""
    section = README[README.index("### A mixture you can keep"):]
    snippet = re.search(r"```python\n(.*?)```", section, re.S)[1]
    expected = [line.split("#", 1)[1].strip() for line in snippet.splitlines()
                if line.startswith("print(")]
    run = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines() == expected


def test_the_mixture_prose_agrees_with_its_benchmark_table():
    """ "matches or beats EM's everywhere, and every setting with N >= 10k takes less time" """
    rows = [row for row in _rows("gmm_vs_sklearn.md") if row[0] != "setting"]
    assert len(rows) == 11
    assert all(float(row[7]) >= -0.00005 for row in rows)  # ours - EM, to the printed digit
    assert all(float(row[11]) < 1 for row in rows if int(row[1]) >= 10_000)
    flat = " ".join(README.split())
    assert ("matches or beats EM's everywhere, and every setting with N >= 10k takes less "
            "time") in flat


def test_the_gap_prose_agrees_with_its_table():
    """The inference-gap section's claims, recomputed from docs/results/vae_gaps.md."""
    rows = {row[0]: [tuple(map(float, cell.split(" ± "))) for cell in row[1:]]
            for row in _rows("vae_gaps.md") if "±" in row[1]}
    column = lambda label, i: rows[label][i][0]  # noqa: E731
    amortization, approximation = ("amortization gap ELBO(q*) - ELBO(q)",
                                   "approximation gap log p(x) - ELBO(q*)")
    flat = " ".join(README.split())
    for i in (0, 1):  # "the encoder's share is at least as large as ... for both models"
        assert column(amortization, i) >= column(approximation, i)
        # "a two-layer flow fitted per image wins back less than a tenth of the family's share"
        assert 0 < column("flow gain ELBO(flow) - ELBO(q*)", i) < column(approximation, i) / 10
    best = "log p(x), best of the bounds"
    assert f"is {column(best, 1) - column(best, 0):.1f} nats better in log p(x)" in flat
    assert column(approximation, 1) < column(approximation, 0)  # "a smaller approximation gap"
    (default_mean, default_se), (vamp_mean, vamp_se) = rows["AIS - IS, paired"]
    assert abs(default_mean) < 2.5 * default_se  # "agree to 0.29 ± 0.14 nats"
    assert f"agree to {default_mean:.2f} ± {default_se:.2f} nats" in flat
    assert vamp_mean < -2 * vamp_se  # "AIS lies 1.70 ± 0.30 nats *below* IS"
    assert f"AIS lies {-vamp_mean:.2f} ± {vamp_se:.2f} nats *below* IS" in flat
    assert "the encoder's share is at least as large as the diagonal Gaussian family's" in flat
    # "q*'s mean lies within about a tenth of a posterior sd of the NUTS mean, the encoder's
    # up to 0.4"
    nuts = [row for row in _rows("vae_gaps.md") if row[0].startswith("NUTS")][0][1:]
    errors = [re.match(r"q ([\d.]+), q\* ([\d.]+) ", cell).groups() for cell in nuts]
    assert all(float(q_star) <= 0.12 and float(q) <= 0.4 for q, q_star in errors)


def test_the_loo_prose_agrees_with_its_table():
    text = (ROOT / "docs" / "results" / "loo_exports.md").read_text()
    toy = [row for row in _rows("loo_exports.md") if "(" in row[1] and row[0] != "route"]
    for row in toy:  # "every elpd_diff inside its standard error"
        diff, dse = re.fullmatch(r"([\d.]+) \(([\d.]+)\)", row[7]).groups()
        assert float(diff) <= float(dse)
    orders = re.search(r"VAE: az.compare's order (.*); order by importance-sampled "
                       r"log p\(x\) (.*)\.", text).groups()
    assert orders[0] == orders[1]
    vae = {row[0]: row for row in _rows("loo_exports.md")
           if row[0] in ("iwae", "meanfield", "trace") and "(" not in row[1]}
    conditional = {name: float(row[5]) for name, row in vae.items()}
    assert min(conditional, key=conditional.get) == "iwae"  # "would have put iwae last"


def test_the_compare_prose_agrees_with_the_vae_table():
    """ "Closed-form KL wins on the VAE at this budget; IWAE's tighter bound does not pay off
    in held-out log p(x) after 20 epochs and its encoder gradients are 3x noisier" """
    text = (ROOT / "docs" / "compare" / "vae" / "comparison.md").read_text()
    rows = {row[0]: row for row in ([c.strip() for c in line.strip("|").split("|")]
                                    for line in text.splitlines()[2:])}
    mean = lambda name, column: float(rows[name][column].split(" ± ")[0])  # noqa: E731
    assert max(rows, key=lambda name: mean(name, 3)) == "meanfield"
    assert mean("iwae", 3) < mean("trace", 3)
    assert round(mean("iwae", 4) / mean("trace", 4)) == 3


def test_the_contention_prose_agrees_with_its_table():
    """The busy-machine paragraph's ratios, recomputed from docs/results/contention.md."""
    rows = {int(row[0]): [float(c.replace(",", "")) for c in row[2:7]]
            for row in _rows("contention.md") if row[0].isdigit()}
    auto, one, two, _plain, numpyro = range(5)
    ratio = lambda busy, route: rows[busy][route] / rows[0][route]  # noqa: E731
    flat = " ".join(README.split())
    for cells in rows.values():  # "within 5% of the best fixed thread count"
        assert cells[auto] >= 0.95 * max(cells[one], cells[two])
    assert f"runs at {rows[0][auto] / rows[0][numpyro]:.2f}x NumPyro" in flat
    assert (f"keeps {ratio(1, auto):.0%} of its quiet speed where two threads keep "
            f"{ratio(1, two):.0%}") in flat
    assert f"({ratio(1, auto):.2f}) than NumPyro does ({ratio(1, numpyro):.2f})" in flat
    assert f"({ratio(3, auto):.2f} and {ratio(3, numpyro):.2f})" in flat
    assert f"({rows[3][two]:,.0f} examples/s at 2 threads)" in flat


def _number(cell: str) -> float:
    return float(cell.replace(",", ""))


def test_the_speed_prose_agrees_with_its_tables():
    """The speed section's numbers, recomputed from docs/results/vs_numpyro.md and
    docs/results/vae_throughput.md (both written by `make bench`)."""
    flat = " ".join(README.split())
    numpyro_text = (ROOT / "docs" / "results" / "vs_numpyro.md").read_text()
    small, full = numpyro_text.split("Epochs of full-MNIST size")
    table = lambda text: [[c.strip() for c in line.strip("|").split("|")]  # noqa: E731
                          for line in text.splitlines() if line.startswith("| ")]
    small, full = table(small), table(full)
    default, fit32 = "fit, default", "fit, float32"

    def row(rows, route, batch):
        (found,) = [r for r in rows if r[0].startswith(route) and r[1] == str(batch)]
        return found

    ratio = lambda rows, route, batch: float(row(rows, route, batch)[4])  # noqa: E731
    speed = lambda rows, route, batch: _number(row(rows, route, batch)[3])  # noqa: E731
    assert (f"{ratio(small, default, 1024):.2f}x on mnist5k's epochs and "
            f"{ratio(full, default, 1024):.2f}x on full-MNIST-size ones at batch 1024") in flat
    assert (f"in float32 `fit` runs at {ratio(small, fit32, 1024):.2f}x and "
            f"{ratio(full, fit32, 1024):.2f}x NumPyro's speed there") in flat
    assert (f"the default reaches {ratio(small, default, 128):.2f}x on mnist5k's epochs and "
            f"{ratio(full, default, 128):.2f}x on full-MNIST-size ones") in flat
    assert f"a step is ~{128 / speed(small, fit32, 128) * 1e3:.0f} ms" in flat
    # fit / bare loop: the summary lines' paired ratios (not a ratio of the tables' medians)
    small_text, full_text = numpyro_text.split("Epochs of full-MNIST size")
    to_loop = {(text is full_text, int(b)): f"{value}x" for text in (small_text, full_text)
               for b, value in re.findall(r"- batch (\d+): .*fit float32 / bare loop = ([\d.]+)",
                                          text)}
    assert (f"turn by turn: {to_loop[False, 128]} at batch 128 and {to_loop[False, 1024]} at "
            f"batch 1024 (on full-MNIST-size epochs, {to_loop[True, 128]} and "
            f"{to_loop[True, 1024]})") in flat
    guard = [row for row in _rows("step_profile.md") if row[0] == "NaN guard"][0][2]
    assert (f"the NaN guard's gradient norm and flag, takes {guard} ms per step in "
            f"`benchmarks/step_profile.py` below, "
            f"{float(guard) / (128 / speed(small, fit32, 128) * 1e3):.0%} of a batch-128 step"
            ) in flat
    assert (f"({speed(small, default, 128):,.0f} against {speed(small, fit32, 128):,.0f} "
            f"examples/s on mnist5k's epochs, {speed(full, default, 128):,.0f} against "
            f"{speed(full, fit32, 128):,.0f} on full-MNIST-size ones)") in flat
    ceiling = re.search(r"The float32 ceiling: (\d+) GFLOP/s .* bfloat16 (\d+) GFLOP/s",
                        numpyro_text)
    assert (f"runs at {ceiling[2]} GFLOP/s against {ceiling[1]} in float32") in flat
    shares = re.search(r"- batch 128: .* numpyro (\d+%), loop \d+%, fit float32 (\d+%)",
                       numpyro_text)
    assert f"uses {shares[1]} of the float32 ceiling at batch 128 and `fit` {shares[2]}" in flat
    compiled, compiled32 = "fit, compile=on, precision", "fit, compile=on, float32"
    assert (f"compiled, the default reaches {ratio(small, compiled, 128):.2f}x NumPyro on "
            f"mnist5k's epochs and {ratio(full, compiled, 128):.2f}x on full-MNIST-size ones "
            f"({ratio(small, compiled32, 128):.2f}x in float32), and "
            f"{ratio(small, compiled, 1024):.2f}x and {ratio(full, compiled, 1024):.2f}x at "
            "batch 1024") in flat
    assert f"one-time cost: {row(small, compiled, 128)[5]} s in the table above" in flat
    saved = re.search(r"- batch 128: .* \(([\d.]+) ms saved per step\)", numpyro_text)[1]
    full_steps = -(-int(re.search(r"full-MNIST size \((\d+) rows", numpyro_text)[1]) // 128)
    full_saved = (_number(row(full, default, 128)[2])
                  - _number(row(full, compiled, 128)[2])) / full_steps
    assert (f"a batch-128 step saved {saved} ms on mnist5k's epochs in this run and "
            f"{full_saved * 1e3:.2f} ms on the full-MNIST-size ones") in flat
    assert f"runs of at least {COMPILE_PAYS_AFTER:,} steps (`COMPILE_PAYS_AFTER`" in flat
    train = load_config(None).train
    rows = int(re.search(r"(\d+) dynamically binarized mnist5k training", numpyro_text)[1])
    steps = train.epochs * -(-rows // train.batch_size)
    assert (f"`compile: off (auto: {steps} steps, under the {COMPILE_PAYS_AFTER} a compile pays "
            "after)`") in flat
    mean = re.search(r"mean fit - NumPyro = ([+-][\d.]+) nats", numpyro_text)[1]
    assert f"differ by {mean.lstrip('+')} nats on average over three seeds" in flat

    throughput = (ROOT / "docs" / "results" / "vae_throughput.md").read_text()
    by_batch = dict(re.findall(r"batch (\d+): \d+ examples.*?\n(.*?)\n\n", throughput, re.S))
    routes = {int(batch): {r[0]: r for r in [[c.strip() for c in line.strip("|").split("|")]
                                             for line in body.splitlines()
                                             if line.startswith("| ")]}
              for batch, body in by_batch.items()}
    plain = lambda batch, route: routes[batch][route][3]  # noqa: E731 - ratio vs plain
    bf16 = "fit, elbo=fused, precision=bfloat16"
    assert (f"({plain(1024, bf16)}x plain PyTorch in the table below, against {plain(128, bf16)}x "
            "at 128;") in flat
    assert (f"`elbo=fused` runs at {plain(128, 'fit, elbo=fused')}x the plain loop at batch "
            f"128, with Pyro's own `TraceMeanField_ELBO` at {plain(128, 'fit, elbo=meanfield')}x"
            ) in flat
    compiled, eager = "loop: torch.compile(fused), fused Adam", "loop: fused, fused Adam"
    assert (f"({plain(128, compiled)}x plain at batch 128 against the eager bare loop's "
            f"{plain(128, eager)}x, after {routes[128][compiled][4]} s of compiling; "
            f"{plain(1024, compiled)}x against {plain(1024, eager)}x at batch 1024 after "
            f"{routes[1024][compiled][4]} s;") in flat
    fit_compiled = ["fit, elbo=fused, compile=on",
                    "fit, elbo=fused, precision=bfloat16, compile=on"]
    assert (f"`fit`'s own compiled step (`compile=on`: {plain(128, fit_compiled[0])}x and "
            f"{plain(128, fit_compiled[1])}x plain at batch 128 in float32 and bfloat16, "
            f"{plain(1024, fit_compiled[0])}x and {plain(1024, fit_compiled[1])}x at batch 1024)"
            ) in flat
    jit = "loop: JitTrace_ELBO (torch.jit.trace), torch Adam"
    assert f"`JitTrace_ELBO` ({plain(128, jit)}x and {plain(1024, jit)}x;" in flat
    own = [_number(routes[b]["fit, elbo=fused"][2]) / _number(routes[b][eager][2])
           for b in (128, 1024)]
    assert f"is {own[0]:.2f}x at batch 128 and {own[1]:.2f}x at 1024 in this run" in flat
    assert f"{to_loop[False, 128]} and {to_loop[False, 1024]} in `vs_numpyro.py`'s run" in flat
    largest = re.findall(r"largest \|difference\| ([\d.]+) nats", throughput)
    assert f"within {largest[0]} nats of float32's after 10 epochs and within {largest[1]}" in flat
    best = re.search(r"fit elbo=auto [\d.]+ s/epoch \(\d thread\(s\)\): ([\d.]+)x", throughput)
    assert f"`fit` is {best[1]}x faster" in flat
    elbos = re.findall(r"\| (-[\d.]+) \|\n", throughput)[:3]  # example, auto, fused_trace
    assert (f"reaches {elbos[1]} nats against the example's {elbos[0]} after 10 epochs" in flat
            and f"own estimator, {elbos[2]})" in flat)


def test_the_two_layer_gap_prose_agrees_with_its_table():
    """The two-stochastic-layer paragraph, recomputed from docs/results/vae_gaps_2layer.md
    (column 0: the default one-layer VAE, column 1: iwae_2layer, both on mnist5k)."""
    rows = {row[0]: [tuple(map(float, cell.split(" ± "))) for cell in row[1:]]
            for row in _rows("vae_gaps_2layer.md") if "±" in row[1]}
    text = lambda label, i: "{:.2f} ± {:.2f}".format(*rows[label][i])  # noqa: E731
    flat = " ".join(README.split())
    best = rows["log p(x), best of the bounds"]
    assert f"log p(x) is {best[0][0] - best[1][0]:.2f} nats below one layer's" in flat
    approximation, amortization = ("approximation gap log p(x) - ELBO(q*)",
                                   "amortization gap ELBO(q*) - ELBO(q)")
    assert (f"approximation gap is {text(approximation, 1)} nats against the diagonal "
            f"Gaussian's {text(approximation, 0)}") in flat
    assert rows[approximation][1][0] < rows[approximation][0][0]
    assert f"({text(amortization, 1)} and {text(amortization, 0)} nats)" in flat
    (one, one_se), (two, two_se) = rows[amortization]  # "the same for both"
    assert abs(one - two) < 2 * (one_se**2 + two_se**2) ** 0.5
    flow = [mean for mean, _ in rows["flow gain ELBO(flow) - ELBO(q*)"]]
    assert flow[1] < 0 < flow[0]
    assert f"leave it {-flow[1]:.2f} nats below q* for two layers" in flat
    assert f"it gains {flow[0]:.2f} over q* on mnist5k" in flat
    ais_is = rows["AIS - IS, paired"]
    assert (f"AIS and IS differ by {text('AIS - IS, paired', 1)} nats for two layers and by "
            f"{text('AIS - IS, paired', 0)} for one layer") in flat
    assert abs(ais_is[1][0]) < 2 * ais_is[1][1]


def test_the_step_profile_prose_agrees_with_its_table():
    """The mixed-precision paragraph's per-step times, from docs/results/step_profile.md."""
    rows = {row[0]: row[1:] for row in _rows("step_profile.md")}
    full, half = (lambda kind: rows[kind][1]), (lambda kind: rows[kind][3])  # ms/step cells
    flat = " ".join(README.split())
    cost = float(half("casts")) - float(full("casts"))
    gain = float(full("matrix products")) - float(half("matrix products"))
    assert cost > 0.5 * gain  # at least "most of"
    spend = "more than the products gain" if cost > gain else "most of what the products gain"
    assert (f"In bfloat16 the casts take {half('casts')} ms per step against {full('casts')} in "
            f"float32, while the products drop from {full('matrix products')} ms to "
            f"{half('matrix products')}: the copies spend {spend}") in flat
    compiled, compiled16 = (lambda kind: rows[kind][5]), (lambda kind: rows[kind][7])
    assert (f"({compiled('total')} ms per step in float32 and {compiled16('total')} in bfloat16, "
            f"against {full('total')} and {half('total')} eager)") in flat
    assert (f"In bfloat16 its generated kernels take {compiled16('generated kernels')} ms "
            f"against {compiled('generated kernels')} in float32") in flat
    assert (f"is Adam ({compiled('Adam')} ms) and the random draws "
            f"({compiled('random draws')} ms)") in flat
    assert abs(float(compiled("total")) / float(full("total")) - 1) < 0.15  # "about as long"
