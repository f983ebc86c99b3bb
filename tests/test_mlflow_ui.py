"""MLflow's UI in a real browser, as a new user meets it after `main`: the link the summary prints opens
the experiment on its training runs, `main` expands to its steps, its description says what it decided,
the report renders with its images, and the registered model shows its champion. Headless Chromium
from Debian's packages (`chromium`, `chromium-driver`; .ci/run installs them), driven by Selenium.
Screenshots of each page go to the test's output folder (`mlflow-ui*/screenshots`)."""

from __future__ import annotations

import contextlib
import shutil
import sys
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from infra.local_stack import background, free_port, on_free_ports, wait_until
from tests.conftest import QUICK, cli_env, run_cli
from training.config import JobConfig
from training.mlflow_env import MLFLOW_UI

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow, pytest.mark.xdist_group("mlflow_ui"),
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH to drive MLflow's UI "
                                                "(apt-get install chromium chromium-driver; .ci/run does)"),
]
STEPS = ["prepare-data", "train", "evaluate", "register", "promote"]  # main's child runs
NOTE = "[data-testid=note-editor-preview-content]"  # a run's description, rendered
WAIT_S = 60  # for a page of the UI to show what is asked (a cold start on 2 busy cores is slow)


@pytest.fixture(scope="module")
def mlflow_ui(tmp_path_factory, mnist_path):
    """A short `main` in a fresh sqlite store, `mlflow ui` over it on a free port and a fresh headless
    Chromium; yields the browser, the UI's address, main's output and a screenshot writer."""
    tmp_path = tmp_path_factory.mktemp("mlflow-ui")
    done = run_cli(["main", *QUICK, "--data", str(mnist_path), "--epochs", "1", "--samples", "500",
                    "--min-classes-covered", "0", "--checkpoint-dir", str(tmp_path / "ckpt")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with on_free_ports(lambda: _mlflow_ui(tmp_path)) as address, _chromium(tmp_path) as browser:
        def screenshot(name: str) -> None:
            browser.save_screenshot(str(shots / f"{name}.png"))
        yield SimpleNamespace(browser=browser, address=address, stdout=done.stdout, screenshot=screenshot)


@contextlib.contextmanager
def _mlflow_ui(tmp_path: Path):
    """`mlflow ui` as the summary tells a person to run it, on 127.0.0.1 and a free port."""
    port = free_port()
    env = cli_env(tmp_path)
    args = [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri",
            env["MLFLOW_TRACKING_URI"], "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with background(args, tmp_path / "mlflow-ui.log", env) as process:
        address = f"http://127.0.0.1:{port}"
        wait_until(lambda: urllib.request.urlopen(f"{address}/health", timeout=2).status == 200,
                   "mlflow ui", process, tmp_path / "mlflow-ui.log", timeout=120)
        yield address


@contextlib.contextmanager
def _chromium(tmp_path: Path):
    """Debian's Chromium through its chromedriver: no browser or driver is downloaded."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver = shutil.which("chromedriver")
    if driver is None:
        pytest.fail(f"{CHROMIUM} is installed but chromedriver is not: apt-get install chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000",
                     f"--user-data-dir={tmp_path / 'chromium-profile'}"):  # a new user's: nothing remembered
        options.add_argument(argument)
    service = Service(driver, log_output=str(tmp_path / "chromedriver.log"))
    browser = webdriver.Chrome(options=options, service=service)
    try:
        yield browser
    finally:
        browser.quit()


def _wait(ui, found, what: str):
    """What `found()` returns once it is truthy, within WAIT_S."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(ui.browser, WAIT_S).until(lambda _: found(),
                                                   f"no {what} on {ui.browser.current_url}")


def _all(ui, css: str) -> list:
    return ui.browser.find_elements("css selector", css)


def _run_links(ui) -> list:
    """The run names in the runs table, top to bottom (its pinned left column holds them)."""
    return _all(ui, ".ag-pinned-left-cols-container .ag-row a[href*='/runs/']")


def _training_runs(ui) -> None:
    """Follow the link the summary prints (`mlflow ui` answering on another port than its default)."""
    (link,) = [line.split("then open ", 1)[1] for line in ui.stdout.splitlines() if "then open " in line]
    ui.browser.get(link.replace(MLFLOW_UI, ui.address))
    _wait(ui, lambda: [a for a in _run_links(ui) if a.text.strip() == "main"], "runs table with main")


def _mains_description(ui):
    """From the training runs, main's page (its row clicked, as a person does); its description, whole."""
    _training_runs(ui)
    _run_links(ui)[0].click()
    note = _wait(ui, lambda: _all(ui, f"{NOTE}"), "description of main")[0]
    for more in _all(ui, "[data-testid=show-comment-toggle]"):  # a long one starts folded
        more.click()
    return note


def _screenshot(ui, name: str, element=None) -> None:
    """The page without the MLflow Assistant panel that opens beside it, `element` in view."""
    for close in _all(ui, "button[aria-label=Close]"):
        with contextlib.suppress(Exception):
            close.click()
    if element is not None:
        ui.browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", element)
    ui.screenshot(name)


def test_the_printed_link_opens_the_training_runs_and_main_expands_to_its_steps(mlflow_ui):
    ui = mlflow_ui
    _training_runs(ui)
    page = ui.browser.find_element("tag name", "body").text
    assert "/runs?" in ui.browser.current_url and "No data available" not in page, "not the GenAI overview"
    assert [a.text.strip() for a in _run_links(ui)] == ["main"], "main's steps nest under it"
    _all(ui, ".ag-pinned-left-cols-container .ag-row button")[0].click()  # the row's expander
    names = _wait(ui, lambda: len(_run_links(ui)) > 1 and [a.text.strip() for a in _run_links(ui)],
                  "child runs under main")
    assert names[0] == "main" and sorted(names[1:]) == sorted(STEPS), names
    _screenshot(ui, "runs")


def test_mains_description_says_what_it_decided_and_links_the_report_and_runs(mlflow_ui):
    ui = mlflow_ui
    note = _mains_description(ui)
    name = JobConfig().model_name
    assert note.text.startswith(f"{name} version 1: registered and promoted to champion."), note.text
    assert "Why: no champion yet: the first evaluated model becomes champion" in note.text
    assert "On 500 samples (real images in brackets): FID " in note.text, note.text
    links = {a.text: a.get_attribute("href") for a in note.find_elements("tag name", "a")}
    assert set(links) == {"evaluation report", *("train", "evaluate", "promote"), f"{name} version 1"}, links
    assert all(href.startswith(f"{ui.address}/#/") for href in links.values()), links
    _screenshot(ui, "main", note)
    ui.browser.get(links["evaluate"])
    _wait(ui, lambda: [h for h in _all(ui, "h2") if h.text == "evaluate"], "evaluation run's page")


def test_the_evaluation_report_renders_with_its_images_loaded(mlflow_ui):
    ui = mlflow_ui
    report = _mains_description(ui).find_element("link text", "evaluation report").get_attribute("href")
    ui.browser.get(report)
    frame = _wait(ui, lambda: _all(ui, "iframe"), "frame showing report.html")[0]
    ui.browser.switch_to.frame(frame)
    try:
        _wait(ui, lambda: _all(ui, "h1") and ui.browser.execute_script(
            "return [...document.images].every(image => image.complete)"), "report with its images")
        widths = ui.browser.execute_script("return [...document.images].map(image => image.naturalWidth)")
        title = ui.browser.find_element("tag name", "h1").text
    finally:
        ui.browser.switch_to.default_content()
    assert title.startswith("Evaluation of runs:/")
    assert len(widths) >= 3 and all(width > 0 for width in widths), widths  # grid, neighbours, histogram
    _screenshot(ui, "report")


def test_the_registered_models_page_shows_the_champion(mlflow_ui):
    ui = mlflow_ui
    ui.browser.get(f"{ui.address}/#/models/{JobConfig().model_name}")
    chips = _wait(ui, lambda: _all(ui, "[role=status][data-component-id*=modelversionaliastag]"), "aliases")
    assert {chip.get_attribute("title") for chip in chips} == {"champion", "challenger"}
    assert "@ champion" in [chip.text.replace("\xa0", " ") for chip in chips]
    _screenshot(ui, "model")
