"""The promoted page in a real headless Chromium: it shows the files' numbers, loads its images, fits a phone, escapes text."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_forgery

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox (containers run as root), no GPU, and nothing that phones home: the test machine is offline.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAGE = "projects/image-forgery"
INJECTED = '<img src=x onerror="window.__injected = 1">'


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """public/ with a real run promoted to projects/image-forgery, plus a tampered and two broken copies of it."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    pytest.importorskip("playwright.sync_api", reason="playwright is missing: pip install -e '.[dev]'")
    folder = tmp_path_factory.mktemp("site")
    store = {"MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    trained = run_forgery("train", "epochs=1", "tta=flip", "hydra.run.dir=out", cwd=folder, env=store)
    assert trained.returncode == 0, trained.stderr[-3000:]
    promoted = run_forgery("promote", f"dest=public/{PAGE}", cwd=folder, env=store, timeout=120)
    assert promoted.returncode == 0, promoted.stderr
    root = folder / "public"

    tampered = root / "projects" / "tampered"
    shutil.copytree(root / PAGE, tampered)
    card = json.loads((tampered / "model_card.json").read_text())
    # Also an early-stopped run's epochs: 39 of 40 trained, epoch 33's weights restored and tested.
    (tampered / "model_card.json").write_text(json.dumps({**card, "architecture": INJECTED, "model": "<b>bold</b>", "epochs": 39, "epochs_planned": 40, "evaluated_epoch": 33}))

    broken = root / "projects" / "broken"
    shutil.copytree(root / PAGE, broken)
    (broken / "classification_report.tsv").unlink()
    (broken / "gradcam_results.json").write_text("{not json")

    # A robustness subset of one class (ROC AUC undefined, written as null), and a one-epoch chart whose
    # accuracy axis spans 45-55%, where ticks fall every 2.5 points.
    one_class = root / "projects" / "one-class"
    shutil.copytree(root / PAGE, one_class)
    robustness = json.loads((one_class / "robustness.json").read_text())
    for row in robustness["corruptions"]:
        row.update({key: None for key in ("roc_auc", "roc_auc_drop") if key in row})
    (one_class / "robustness.json").write_text(json.dumps(robustness))
    metrics = json.loads((one_class / "training_metrics.json").read_text())
    metrics["history"].update(accuracy=[0.5], val_accuracy=[0.5])
    metrics["headline"].update(test_roc_auc=None, test_pr_auc=None)  # a one-class test split has neither
    (one_class / "training_metrics.json").write_text(json.dumps(metrics))

    # Losses of exactly 1 point / 0.01 ROC AUC, as Python's subtraction stores them (0.57 - 0.56 = 0.00999...98),
    # and one just short of it.
    exact = scored_copy(root, "exact-points", 0.57, [0.56, 0.5601])
    calibration = json.loads((exact / "calibration.json").read_text())
    (exact / "calibration.json").write_text(json.dumps({**calibration, "temperature": 1.0, "fit_note": "no validation image has another class scored above its own, so ..."}))

    # Gains of exactly 1 point / 0.01 ROC AUC (0.56 - 0.57 = -0.00999...99: a hair short of it), and one just short.
    scored_copy(root, "exact-gain", 0.56, [0.57, 0.5699])

    broken_robustness = root / "projects" / "broken-robustness"
    shutil.copytree(root / PAGE, broken_robustness)
    (broken_robustness / "robustness.json").write_text("{not json")
    return root


def scored_copy(root: Path, name: str, clean_score: float, scores: list[float]) -> Path:
    """A copy of the page's project whose robustness rows score `scores` (the rest as clean) on both metrics."""
    project = root / "projects" / name
    shutil.copytree(root / PAGE, project)
    robustness = json.loads((project / "robustness.json").read_text())
    clean, *damaged = robustness["corruptions"]
    clean.update(accuracy=clean_score, roc_auc=clean_score)
    for row, value in zip(damaged, scores + [clean_score] * len(damaged)):
        # The drops as Python's subtraction stores them, as evaluation writes them.
        row.update(accuracy=value, accuracy_drop=clean_score - value, roc_auc=value, roc_auc_drop=clean_score - value)
    (project / "robustness.json").write_text(json.dumps(robustness))
    return project


@pytest.fixture(scope="module")
def server(public: Path) -> Iterator[str]:
    """`python -m http.server` on a free 127.0.0.1 port serving public/; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(public), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base, timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser(public: Path) -> Iterator[Any]:
    """A headless Debian Chromium driven by Playwright (never Playwright's own downloaded browsers)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_page(browser: Any, url: str, width: int, height: int = 900) -> tuple[Any, list[str]]:
    """The page at `url`, fully rendered (every section filled, every image settled); and its console errors."""
    page = browser.new_page(viewport={"width": width, "height": height})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}") if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    page.goto(url)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.slot, #run')].every((slot) => !slot.textContent.startsWith('Loading'))"
        " && [...document.images].every((image) => image.complete)"
    )
    return page, problems


def shown(page: Any, selector: str) -> str:
    """The visible text of the one element matching `selector`."""
    assert page.locator(selector).count() == 1, selector
    return page.locator(selector).inner_text().strip()


def test_page_shows_the_files_numbers_and_loads_every_image(browser: Any, server: str, public: Path, tmp_path: Path) -> None:
    folder = public / PAGE
    metrics = json.loads((folder / "training_metrics.json").read_text())
    card = json.loads((folder / "model_card.json").read_text())
    gradcam = json.loads((folder / "gradcam_results.json").read_text())
    promotion = json.loads((folder / "promotion.json").read_text())
    headline = metrics["headline"]

    page, problems = open_page(browser, f"{server}{PAGE}/", 1280)
    page.screenshot(path=str(tmp_path / "desktop.png"), full_page=True)

    assert problems == []
    assert page.locator(".error").count() == 0
    images = page.eval_on_selector_all("img", "images => images.map((image) => [image.getAttribute('src'), image.naturalWidth])")
    expected_images = {sample["input"] for sample in gradcam["samples"]} | {name for sample in gradcam["samples"] for name in sample["overlays"].values()}
    # Each image URL names the promotion, so a browser holding an earlier promotion's pictures fetches these.
    stamp = urllib.parse.quote(f"{promotion['run_id']}@{promotion['promoted_at']}", safe="")
    assert {source.removesuffix(f"?v={stamp}") for source, _ in images} == expected_images and len(images) == 6
    assert all(source.endswith(f"?v={stamp}") for source, _ in images), images
    assert all(width > 0 for _, width in images), images

    assert shown(page, "[data-key=test_roc_auc] .stat-value") == f"{headline['test_roc_auc']:.4f}"
    assert shown(page, "[data-key=final_train_accuracy] .stat-value") == f"{headline['final_train_accuracy'] * 100:.2f}%"
    # Beside the test figures, the validation accuracy of the same weights (the evaluated epoch's).
    assert shown(page, "[data-key=final_train_accuracy] .stat-note") == f"validation {headline['evaluated_val_accuracy'] * 100:.2f}% (epoch 1, the weights tested)"
    assert shown(page, "[data-key=test_accuracy] .stat-value") == f"{headline['test_accuracy'] * 100:.2f}%"
    assert shown(page, "[data-key=gradcam_overlays] .stat-value") == str(headline["gradcam_overlays"])
    assert shown(page, "#model-card [data-key=parameters] dd") == f"{card['parameters']:,}"
    assert shown(page, "#model-card [data-key=optimizer] dd") == card["optimizer"]
    assert shown(page, "#model-card [data-key=batch_size] dd") == str(card["batch_size"])
    assert card["epochs"] == card["epochs_planned"] == card["evaluated_epoch"] == 1
    assert shown(page, "#model-card [data-key=epochs] dd") == "1"
    assert shown(page, "#model-card [data-key=test_time_view] dd") == card["test_time_view"] == "flip"
    assert shown(page, "#model-card [data-row=test] [data-column=total]") == f"{card['dataset']['counts']['test']['total']:,}"
    assert page.locator("#model-card .layers li").all_inner_texts()[0].strip() == card["architecture"].split(" -> ")[0]

    rows = [line.split("\t") for line in (folder / "classification_report.tsv").read_text().splitlines()]
    for row in rows[1:]:
        for column, cell in zip(rows[0][1:], row[1:]):
            assert shown(page, f'#classification-report tr[data-row="{row[0]}"] td[data-column="{column}"]') == cell

    labels = metrics["confusion_matrix"]["labels"]
    for i, truth in enumerate(labels):
        for j, predicted in enumerate(labels):
            cell = f'#evaluation td[data-row="{truth}"][data-column="{predicted}"] .cell-count'
            assert shown(page, cell) == f"{metrics['confusion_matrix']['matrix'][i][j]:,}"

    for sample in gradcam["samples"]:
        card_selector = f'.gradcam-card[data-sample="{sample["sample"]}"]'
        assert shown(page, f"{card_selector} [data-key=confidence] dd") == f"{sample['confidence'] * 100:.2f}%"
        assert shown(page, f"{card_selector} [data-key=true_label] dd") == sample["true_label"]
        assert shown(page, f"{card_selector} [data-key=predicted_label] dd") == sample["predicted_label"]
        for label, probability in sample["probabilities"].items():
            assert shown(page, f'{card_selector} li[data-label="{label}"] .probability-value') == f"{probability * 100:.2f}%"

    assert promotion["run_id"] in shown(page, "#run [data-key=run_id] dd")
    assert shown(page, "#run [data-key=metric] dd") == f"{promotion['metric']} = {promotion['metric_value']:.4f}"

    insights = page.locator("#training .insight").all_inner_texts()
    loss = metrics["history"]["loss"]
    assert f"{loss[-1]:.3f}" in insights[0] and ("only epoch" in insights[0] if len(loss) == 1 else f"{loss[0]:.3f}" in insights[0])
    best = max(metrics["history"]["val_accuracy"])
    assert f"peaked at {best * 100:.1f}% by epoch" in insights[1]
    assert page.locator("svg.plot path.line").count() == 12  # loss x2, accuracy x2, ROC, PR, reliability x2, deletion x2, insertion x2


def test_evidence_shows_the_files_numbers(browser: Any, server: str, public: Path) -> None:
    folder = public / PAGE
    calibration = json.loads((folder / "calibration.json").read_text())
    checks = json.loads((folder / "gradcam_checks.json").read_text())
    robustness = json.loads((folder / "robustness.json").read_text())
    gradcam = json.loads((folder / "gradcam_results.json").read_text())

    page, problems = open_page(browser, f"{server}{PAGE}/", 1280)
    assert problems == []
    assert page.locator("#evidence .error").count() == 0

    assert shown(page, "#calibration [data-key=temperature] .stat-value") == f"{calibration['temperature']:.3f}"
    for when in ("before", "after"):
        scores = calibration["test"][when]
        for measure in ("ece", "brier", "nll"):
            assert shown(page, f"#calibration tr[data-row={measure}] td[data-column={when}]") == f"{scores[measure]:.4f}"
        # One reliability marker per bin that holds images, for each of before and after.
        kind = "raw" if when == "before" else "calibrated"
        assert page.locator(f"#calibration circle.marker.series-{kind}").count() == sum(1 for row in scores["reliability"] if row["count"])
    for key, definition in calibration["definitions"].items():
        assert shown(page, f"#calibration .definitions [data-key={key}] dd") == definition
    assert f"T = {gradcam['temperature']:.3f}" in shown(page, "#gradcam [data-key=temperature]")

    for name, check in checks["checks"].items():
        expected = "undefined" if check["value"] is None else f"{check['value']:.4f}"
        assert shown(page, f"#gradcam-checks [data-key={name}] .check-value") == expected
        assert shown(page, f"#gradcam-checks [data-key={name}] .meaning") == check["meaning"]
    # The verdicts follow the rules the page states: Spearman below 0.5; Grad-CAM order beats random by 0.01 of area.
    values = {name: check["value"] for name, check in checks["checks"].items()}
    spearman = values["randomisation_spearman"]
    expected_verdicts = {
        "randomisation": "unknown" if spearman is None else "ok" if spearman < 0.5 else "not-shown",
        "deletion": "ok" if values["deletion_auc_random"] - values["deletion_auc"] >= 0.01 else "not-shown",
        "insertion": "ok" if values["insertion_auc"] - values["insertion_auc_random"] >= 0.01 else "not-shown",
    }
    for key, verdict in expected_verdicts.items():
        assert page.get_attribute(f"#gradcam-checks [data-check={key}]", "data-verdict") == verdict, key
        assert shown(page, f"#gradcam-checks [data-check={key}] .rule").startswith("Rule: OK when")

    rows = robustness["corruptions"]
    assert page.locator("#robustness tbody tr").evaluate_all("rows => rows.map((row) => row.dataset.row)") == [row["name"] for row in rows]
    for row in rows:
        selector = f'#robustness tr[data-row="{row["name"]}"]'
        assert shown(page, f"{selector} td[data-column=accuracy]") == f"{row['accuracy'] * 100:.2f}%"
        assert shown(page, f"{selector} td[data-column=roc_auc]") == f"{row['roc_auc']:.4f}"
        assert row["description"] in shown(page, f"{selector} th")
        if row["name"] != "clean":
            change = -row["roc_auc_drop"]
            assert shown(page, f"{selector} td[data-column=roc_auc_change]").replace("−", "-") in (f"{change:+.4f}", "0.0000")


def test_page_fits_a_phone_screen(browser: Any, server: str, tmp_path: Path) -> None:
    page, problems = open_page(browser, f"{server}{PAGE}/", 375, 812)
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    assert problems == []
    width = page.evaluate("() => [document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]")
    assert max(width[:2]) <= width[2] == 375, width
    page.mouse.wheel(400, 0)
    assert page.evaluate("() => window.scrollX") == 0


def test_html_in_the_files_is_shown_as_text(browser: Any, server: str) -> None:
    page, problems = open_page(browser, f"{server}projects/tampered/", 1280)
    assert page.locator("#model-card img, #model-card b").count() == 0
    assert INJECTED in page.locator("#model-card .layers").inner_text()
    assert shown(page, "#model-card [data-key=model] dd") == "<b>bold</b>"
    assert shown(page, "#model-card [data-key=epochs] dd") == "39 of 40, the weights of epoch 33 tested"
    assert page.evaluate("() => window.__injected") is None
    assert problems == []


def test_a_missing_or_broken_file_shows_a_message_in_its_section_only(browser: Any, server: str) -> None:
    page, problems = open_page(browser, f"{server}projects/broken/", 1280)
    assert "classification_report.tsv" in shown(page, "#classification-report .error")
    assert "gradcam_results.json is not valid JSON" in shown(page, "#gradcam .error")
    assert page.locator("#headline .error, #training .error, #evaluation .error, #model-card .error, #evidence .error").count() == 0
    assert page.locator("[data-key=test_roc_auc] .stat-value").count() == 1
    # The browser itself reports the 404; the page's own code must not throw.
    assert [problem for problem in problems if not problem.startswith("console error: Failed to load resource")] == []


def test_a_page_opened_from_a_file_says_how_to_serve_it(browser: Any, public: Path) -> None:
    # A browser will not fetch() files beside a file:// page: one message saying what to do, not nine "Failed to fetch".
    page, _ = open_page(browser, (public / PAGE / "index.html").as_uri(), 1280)
    assert "python -m http.server" in shown(page, "#run .error")
    assert "Failed to fetch" not in page.inner_text("body")


def test_a_broken_evidence_file_shows_a_message_in_its_part_only(browser: Any, server: str, public: Path) -> None:
    calibration = json.loads((public / "projects" / "broken-robustness" / "calibration.json").read_text())
    page, problems = open_page(browser, f"{server}projects/broken-robustness/", 1280)
    assert "robustness.json is not valid JSON" in shown(page, "#robustness .error")
    assert page.locator(".error").count() == 1
    assert shown(page, "#calibration [data-key=temperature] .stat-value") == f"{calibration['temperature']:.3f}"
    assert page.locator("#gradcam-checks .check").count() == 3
    assert page.locator("#gradcam .gradcam-card").count() == 2
    assert problems == []


def test_undefined_roc_auc_and_narrow_axes_read_right(browser: Any, server: str, public: Path) -> None:
    robustness = json.loads((public / "projects" / "one-class" / "robustness.json").read_text())
    page, problems = open_page(browser, f"{server}projects/one-class/", 1280)
    assert problems == []
    assert page.locator(".error").count() == 0
    for row in robustness["corruptions"]:
        selector = f'#robustness tr[data-row="{row["name"]}"]'
        assert shown(page, f"{selector} td[data-column=accuracy]") == f"{row['accuracy'] * 100:.2f}%"
        assert shown(page, f"{selector} td[data-column=roc_auc]") == "–"
        if row["name"] != "clean":
            assert shown(page, f"{selector} td[data-column=roc_auc_change]") == "–"
    assert "ROC AUC is undefined on these images" in shown(page, "#robustness .insight")
    assert shown(page, "[data-key=test_roc_auc] .stat-value") == "–"  # not 0 or 1, and the accuracy beside it still shows
    assert shown(page, "[data-key=test_accuracy] .stat-note") == "average precision –"
    # Tick labels must name their own positions: evenly spaced and distinct (not 45%, 48%, 50%, 53%, 55%).
    labels = page.locator('svg[aria-label="Accuracy per epoch"] .tick-y').all_text_contents()
    values = [float(label.rstrip("%")) for label in labels]
    steps = {round(b - a, 6) for a, b in zip(values, values[1:])}
    assert len(values) >= 3 and len(steps) == 1 and min(steps) > 0, labels


@pytest.mark.parametrize(("project", "marked", "costly"), [("exact-points", "worse", 1), ("exact-gain", "better", 0)])
def test_a_change_of_exactly_the_notable_size_is_marked(browser: Any, server: str, public: Path, project: str, marked: str, costly: int) -> None:
    # The legend says red marks a loss of 1 point or more, green a gain as large; float subtraction stores exactly
    # 1 point a hair short of it on either side (0.57 - 0.56 = 0.00999...98, 0.56 - 0.57 = -0.00999...99).
    robustness = json.loads((public / "projects" / project / "robustness.json").read_text())
    assert 0.0 < abs(robustness["corruptions"][1]["accuracy_drop"]) < 0.01  # the float the page meets
    page, problems = open_page(browser, f"{server}projects/{project}/", 1280)
    assert problems == []
    one_point, short = (f'#robustness tr[data-row="{row["name"]}"]' for row in robustness["corruptions"][1:3])
    for column in ("accuracy_change", "roc_auc_change"):
        assert page.get_attribute(f"{one_point} td[data-column={column}]", "class") == marked
        assert page.get_attribute(f"{short} td[data-column={column}]", "class") == ""
    assert f"{costly} of {len(robustness['corruptions']) - 1} corruptions cost 0.01 ROC AUC or more" in shown(page, "#robustness .insight")


def test_a_temperature_the_fit_could_not_pin_down_says_why(browser: Any, server: str) -> None:
    page, _ = open_page(browser, f"{server}projects/exact-points/", 1280)
    assert shown(page, "#calibration .stat[data-key=temperature] .stat-note").endswith("; no validation image has another class scored above its own, so ...")


def test_a_fitted_temperature_comes_without_a_note(browser: Any, server: str, public: Path) -> None:
    assert json.loads((public / PAGE / "calibration.json").read_text())["fit_note"] is None  # a real run's file
    page, _ = open_page(browser, f"{server}{PAGE}/", 1280)
    assert "misclassified" not in shown(page, "#calibration .stat[data-key=temperature] .stat-note")
