"""The HTML report: self-contained (no network), the same table as analysis.variant_task_table, each run's
config and provenance, the paired comparison when given; and, in headless Chromium where it is installed,
the page draws its table and plots with no script error."""
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis
from analysis.__main__ import main as analysis_main
from fake_records import write_fake_records, write_fake_tuning

PROVENANCE = {"python": "3.11.7", "torch": "2.13.0+cpu", "transformers": "5.24.0", "device": "cpu",
              "cpu": "Test CPU 9000", "torch_threads": 2, "model_sha256": "ab" * 32,
              "data_sha256": {"train": "cd" * 32, "validation": "ef" * 32}}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("results")
    records = write_fake_records(folder, study="glue_small")
    first = next(r for r in records if r["status"] == "ok")
    first["provenance"] = PROVENANCE
    (folder / "glue_small" / "runs" / f"{first['config_hash']}.json").write_text(json.dumps(first))
    return folder


@pytest.fixture(scope="module")
def df(folder):
    return analysis.load_results(folder)


@pytest.fixture(scope="module")
def page(df):
    return analysis.build_report(df, title="fake study")


@pytest.mark.slow
def test_the_report_is_self_contained(page):
    from analysis.report import _plotly_js

    bundle = _plotly_js()
    assert page.count(bundle) == 1 and page.count("Plotly.newPlot") >= 3  # plotly inlined once
    ours = page.replace(bundle, "")
    assert "<script src" not in ours and "<link" not in ours  # nothing loaded from elsewhere
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", ours)


def test_each_run_has_its_config_and_provenance_on_demand(df, page):
    runs = page[page.index('<table id="runs"'):]
    assert runs.count("<details>") == len(df)
    assert html.escape('"cpu": "Test CPU 9000"', quote=True) in runs  # the one record that has provenance
    assert runs.count("not recorded (an older record)") == len(df) - 1
    assert "RuntimeError: loss is nan" in runs  # a failed run says why
    environment = page[page.index("<h2>Environment"):page.index('<table id="runs"')]
    assert "2.13.0+cpu (1)" in environment and "sha256" not in environment


def test_the_summary_data_are_the_tables_numbers(df, page):
    text = page[page.index('id="report-data"'):]
    data = json.loads(html.unescape(text[text.index(">") + 1:text.index("</script>")]).replace("<\\/", "</"))
    assert len(data["runs"]) == len(df)
    ok = analysis.ok_runs(df)
    scores = sorted(run["score"] for run in data["runs"] if run["score"] is not None)
    assert np.allclose(scores, sorted(ok["main_score"]))
    assert len(data["rows"]) == len(analysis.variant_task_table(df))


@pytest.mark.slow
def test_the_comparison_is_analysis_compare_s_table_when_given(page, tmp_path):
    assert "Paired comparison" not in page
    write_fake_records(tmp_path, study="glue_small", with_predictions=True)
    df = analysis.load_results(tmp_path)
    differences = analysis.compare(df, analysis.load_predictions(df), reference="lora")
    with_comparison = analysis.build_report(df, comparison=differences)
    table = with_comparison[with_comparison.index('<table id="comparison"'):]
    table = table[:table.index("</table>")]
    assert "Paired comparison against lora" in with_comparison and "95 % confidence interval" in with_comparison
    assert "target of inference: new examples; one family of" in with_comparison  # says which it used
    for failure in ("did not fit", "did not generalise"):  # each its own table, from failure_table
        counts = analysis.failure_table(df, analysis.load_predictions(df), failure)
        shown = with_comparison[with_comparison.index(f'<table id="failures-{failure.replace(" ", "-")}"'):]
        assert shown[:shown.index("</table>")].count("<tr") == len(counts) + 1
    body = with_comparison[with_comparison.index("<body>"):].replace(analysis.report._plotly_js(), "")
    assert "collapse" not in body.lower()  # two endpoints, named as such
    assert table.count("<tr data-task=") == len(differences)
    shown = analysis.format_comparison(differences)
    for cell in (shown["Δ ×100 [95 % CI]"].iloc[0], shown["verdict"].iloc[-1], "head"):
        assert f"<td>{html.escape(cell)}</td>" in table


@pytest.mark.slow
def test_a_tuning_folder_gets_its_tuning_sensitivity(page, tmp_path):
    from analysis import tuning
    df = analysis.load_results(write_fake_tuning(tmp_path))
    tuned = analysis.build_report(df)
    assert "<h2>Tuning sensitivity</h2>" in tuned and 'id="plot-tuning-mrpc"' in tuned
    shown = tuned[tuned.index('<table id="tuning"'):]
    assert shown[:shown.index("</table>")].count("<tr") == len(tuning.sensitivity_table(df)) + 1 == 4
    assert "Tuning sensitivity" not in page  # the fake study ran each variant at one rate


@pytest.mark.slow
def test_the_command_line_writes_the_report(folder, tmp_path, capsys):
    out = tmp_path / "r" / "report.html"
    assert analysis_main(["report", str(folder), "--out", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>") and "wrote" in capsys.readouterr().out
    assert analysis_main(["report", str(tmp_path / "missing")]) == 2
    assert analysis_main(["report", str(folder), "--out", str(out), "--compare", "lorra"]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ in a browser
def find_chromium() -> str | None:
    """Chromium's path when it is installed and starts (a half-installed one counts as absent)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        return path if path and subprocess.run([path, "--version"], capture_output=True, timeout=60).returncode == 0 \
            else None
    except (OSError, subprocess.SubprocessError):
        return None


CHROMIUM = find_chromium()
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,2400",
         "--virtual-time-budget=20000", "--enable-logging=stderr", "--v=0"]


def chromium(tmp_path, url, *arguments) -> subprocess.CompletedProcess:
    for attempt in range(2):  # a loaded machine can make a browser start fail once; not the report's fault
        profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
        done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *arguments, url],
                              capture_output=True, text=True, timeout=180)
        if done.returncode == 0:
            break
    return done


def table_cells(dom: str, table_id: str) -> list[list[str]]:
    table = re.search(rf'<table id="{table_id}"[^>]*>(.*?)</table>', dom, re.S).group(1)
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)
    return [[html.unescape(re.sub(r"<[^>]+>", "", cell)) for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
            for row in rows]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium)")
def test_the_report_renders_in_a_browser(df, tmp_path):
    report = analysis.write_report(df, tmp_path / "report.html", title="fake study")
    url = report.resolve().as_uri()
    shown = chromium(tmp_path, url, "--dump-dom")
    assert shown.returncode == 0, shown.stderr[-2000:]
    dom = shown.stdout
    assert 'data-ready="yes"' in dom  # the page's own script ran to its end
    assert re.search(r'<div id="script-errors">\s*</div>', dom), "script errors shown in the page"
    console_errors = [line for line in shown.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    assert not console_errors, console_errors

    expected = analysis.variant_task_table(df)  # the page computes the same table in the browser
    cells = table_cells(dom, "summary")
    assert cells[0] == [c.replace("target_modules", "targets").replace("alpha", "α") for c in expected.columns]
    assert cells[1:] == expected.astype(str).values.tolist()

    plots = re.findall(r'<div id="(plot-[^"]+)" class="plotly-graph-div[^"]*"[^>]*>(.*?)</svg>', dom, re.S)
    assert len(plots) >= 3
    drawn = [name for name, content in plots
             if "main-svg" in content and ("scatterlayer" in content or "boxlayer" in content)]
    assert "plot-params-mrpc" in drawn and "plot-cost" in drawn

    filtered = chromium(tmp_path, url + "#task=rte&experiment=glue_small", "--dump-dom").stdout
    expected = analysis.variant_task_table(df[df["task"] == "rte"])  # the filter keeps rte's column only
    assert table_cells(filtered, "summary")[1:] == expected.astype(str).values.tolist()
    runs = re.findall(r"<tr ([^>]*)>", filtered[filtered.index('<table id="runs"'):])
    assert len(runs) == len(df) and sum("hidden" not in r for r in runs) == (df["task"] == "rte").sum()
    assert re.search(r'<section class="task" data-task="mrpc" hidden', filtered)

    screenshot = tmp_path / "report.png"
    taken = chromium(tmp_path, url, f"--screenshot={screenshot}")
    assert taken.returncode == 0 and screenshot.is_file(), taken.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(screenshot)
    assert pixels.shape[0] >= 2000 and pixels.std() > 0.05  # a drawn page, not a blank one
