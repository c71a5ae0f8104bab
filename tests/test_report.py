"""Every run folder gets report.html: one self-contained page (figures embedded, nothing
fetched) with the headline numbers, every metric, the config and the figures."""

import base64
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pyro_vae.cli import main
from pyro_vae.experiments.report import MAX_LIST, flat_items, render_report

TINY = ["--set", "data.dataset='digits'", "--set", "model.latent_dim=2", "--set",
        "model.hidden=[16]", "--set", "inference.eval_particles=5", "--set",
        "data.train_size=200", "--set", "data.test_size=40"]
CHROMIUM = shutil.which("chromium")


class Page(HTMLParser):
    """The tags, attributes and table cells of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.images, self.links, self.cells, self.headings = [], [], [], [], []
        self._heading = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self._heading = tag in ("h1", "h2")
        if tag == "img":
            self.images.append(attrs)
        self.links += [attrs[key] for key in ("href", "src") if key in attrs]

    def handle_data(self, data):
        if self.tags and self.tags[-1] in ("th", "td"):
            self.cells.append(data)
        if self._heading:
            self.headings.append(data)
            self._heading = False


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    assert main(["train", *TINY, "--epochs", "2", "--quiet", "--out", str(out),
                 "--overwrite"]) == 0
    return out


def test_the_report_is_one_self_contained_page_of_the_run(run):
    metrics = json.loads((run / "metrics.json").read_text())
    page = Page((run / "report.html").read_text())
    assert "script" not in page.tags and "link" not in page.tags  # nothing runs, nothing loads
    assert all(link.startswith("data:image/png;base64,") for link in page.links)
    figures = sorted(run.glob("*.png"))
    assert [image["alt"] for image in page.images] == [path.name for path in figures]
    for image, path in zip(page.images, figures, strict=True):  # the very bytes of each figure
        assert base64.b64decode(image["src"].split(",", 1)[1]) == path.read_bytes()
    assert page.headings == ["pyro-vae run " + run.name, "Headline", "Figures", "Config",
                             "Every metric"]
    row = page.cells.index("test_elbo")
    assert float(page.cells[row + 1]) == pytest.approx(metrics["test_elbo"], rel=1e-5)
    assert (run / "config.toml").read_text().split("\n", 1)[1].split("\n")[0] in \
        (run / "report.html").read_text()


def test_long_lists_are_summarized_and_nested_keys_dotted():
    items = dict(flat_items({"a": {"b": 1, "c": [1.0] * (MAX_LIST + 1)}, "d": [1, 2]}))
    assert items == {"a.b": 1, "a.c": f"{MAX_LIST + 1} values, last 1", "d": [1, 2]}


def test_text_is_escaped(tmp_path):
    text = render_report(tmp_path, {"data": "<script>alert(1)</script>"})
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_the_mixture_command_writes_a_report_too(tmp_path):
    out = tmp_path / "gmm"
    assert main(["gmm", "--simulate", "300,2,2", "--components", "2", "--out",
                 str(out)]) == 0
    page = Page((out / "report.html").read_text())
    assert len(page.images) == len(list(out.glob("*.png"))) > 0


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian's chromium package)")
def test_the_report_renders_in_headless_chromium_without_console_errors(run, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="drives Chromium: playwright")
    errors = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda message: message.type == "error" and errors.append(message))
        page.on("pageerror", lambda error: errors.append(error))
        page.goto((run / "report.html").as_uri())
        sizes = page.eval_on_selector_all(
            "img", "images => images.map(i => [i.complete, i.naturalWidth, i.clientHeight])")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert errors == []
    assert len(sizes) == len(list(run.glob("*.png")))
    assert all(complete and width > 0 and height > 0 for complete, width, height in sizes)
    assert (tmp_path / "report.png").stat().st_size > 10_000
