"""evaluate / simulate / monitor as an operator runs them, on a throw-away Typer app that
registers the commands the way ``deidgate model`` does (service/cli/model.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from service.cli.model_eval import register
from synthetic.scores import synthetic_scores
from workers.score.evaluate import DEMO_NOTICE
from workers.score.table import ScoreTable, write_scores

CARD = """\
name: synthetic-demo
version: "0.3"
synthetic_demo: true
intended_use: "Exercises the machinery: synthetic demo model, not for clinical use."
thresholds:
  likely_normal_below: 0.02
  priority_at_or_above: 0.3
"""


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    model = typer.Typer()
    register(model)
    return model


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ScoreTable]:
    folder = tmp_path_factory.mktemp("scores")
    table = synthetic_scores(1500, seed=4, second_model=True)
    write_scores(folder / "scores.csv", table)
    (folder / "card.yaml").write_text(CARD, encoding="utf-8")
    return folder, table


def invoke(app: typer.Typer, *args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def assert_report(out: Path, html_name: str, table: ScoreTable, pngs: list[str]) -> dict:
    for name in pngs:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    html = (out / html_name).read_text(encoding="utf-8")
    assert DEMO_NOTICE in html and "synthetic-demo" in html
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert html.count("data:image/png;base64,") == html.count("<img")
    figures = json.loads((out / html_name.replace(".html", ".json")).read_text(),
                         parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    text = html + json.dumps(figures)
    for pseudonym in (*table.exam[:50].tolist(), *table.woman[:50].tolist()):
        assert pseudonym not in text  # counts only, never a pseudonym
    return figures


def test_evaluate_one_model_with_its_card(app: typer.Typer, data: tuple[Path, ScoreTable],
                                          tmp_path: Path) -> None:
    folder, table = data
    out = tmp_path / "eval"
    text = invoke(app, "evaluate", str(folder / "scores.csv"), "--card", str(folder /
                  "card.yaml"), "--score-column", "score", "--resamples", "1000", "--out",
                  str(out))
    assert "synthetic-demo 0.3: AUC" in text and "clustered bootstrap" in text
    fig = assert_report(out, "evaluate.html", table,
                        ["roc.png", "hist.png", "calibration.png", "subgroups.png"])
    m = fig["models"][0]
    assert m["model"]["notice"] == DEMO_NOTICE
    assert [o["name"] for o in m["operating_points"]] == ["likely_normal_below",
                                                         "priority_at_or_above"]
    assert fig["data"]["women"] == 1500 and fig["data"]["rows"] == len(table)
    assert {s["dimension"] for s in m["subgroups"]} == {"vendor", "age", "density"}
    assert 0.85 < m["auc"]["estimate"] < 0.95
    assert m["auc"]["low"] < m["auc"]["estimate"] < m["auc"]["high"]
    assert "resamples by woman" in m["auc"]["method"]
    assert "ignores clustering" in m["auc_exam_level_bootstrap"]["method"]
    assert m["auc_delong"]["low"] < m["auc"]["estimate"] < m["auc_delong"]["high"]
    # the same seed gives the same figures
    again = tmp_path / "again"
    invoke(app, "evaluate", str(folder / "scores.csv"), "--card", str(folder / "card.yaml"),
           "--score-column", "score", "--resamples", "1000", "--out", str(again))
    assert (again / "evaluate.json").read_text() == (out / "evaluate.json").read_text()


def test_evaluate_two_models_two_columns_and_two_files(
    app: typer.Typer, data: tuple[Path, ScoreTable], tmp_path: Path
) -> None:
    folder, table = data
    out = tmp_path / "two"
    text = invoke(app, "evaluate", str(folder / "scores.csv"), "--card", str(folder /
                  "card.yaml"), "--resamples", "1000", "--out", str(out))
    assert "DeLong: difference +" in text
    fig = assert_report(out, "evaluate.html", table, ["roc.png", "hist_1.png", "hist_2.png"])
    comp = fig["comparison"]
    assert comp["delong"]["difference"] > 0 and comp["delong"]["p_value"] < 0.05
    boot = comp["bootstrap_difference"]
    assert boot["low"] < comp["delong"]["difference"] < boot["high"]
    # the same comparison from two files joined on exam (rows of the second file shuffled)
    order = np.random.default_rng(0).permutation(len(table))
    second = ScoreTable(exam=table.exam[order], woman=table.woman[order],
                        scores={"score": table.score("b")[order]},
                        label=None if table.label is None else table.label[order])
    write_scores(tmp_path / "b.csv", second)
    one = ScoreTable(exam=table.exam, woman=table.woman, scores={"score": table.score()},
                     label=table.label)
    write_scores(tmp_path / "a.csv", one)
    out2 = tmp_path / "joined"
    invoke(app, "evaluate", str(tmp_path / "a.csv"), "--compare", str(tmp_path / "b.csv"),
           "--card", str(folder / "card.yaml"), "--resamples", "1000", "--out", str(out2))
    joined = json.loads((out2 / "evaluate.json").read_text())["comparison"]["delong"]
    assert joined["difference"] == pytest.approx(comp["delong"]["difference"])
    assert joined["p_value"] == pytest.approx(comp["delong"]["p_value"])


def test_simulate(app: typer.Typer, data: tuple[Path, ScoreTable], tmp_path: Path) -> None:
    folder, table = data
    out = tmp_path / "sim"
    text = invoke(app, "simulate", str(folder / "scores.csv"), "--card", str(folder /
                  "card.yaml"), "--score-column", "score", "--resamples", "1000",
                  "--ceiling-hours", "8", "--out", str(out))
    assert "rule-out: up to" in text and "score+ceiling: abnormal turnaround" in text
    fig = assert_report(out, "simulate.html", table, ["rule_out.png", "turnaround.png"])
    o = fig["reading_order"]["orderings"]
    assert o["score"]["abnormal"]["mean"] < o["fifo"]["abnormal"]["mean"]
    assert fig["reading_order"]["ceiling_hours"] == 8
    # arrivals from the CSV's own arrival column
    invoke(app, "simulate", str(folder / "scores.csv"), "--score-column", "score",
           "--arrivals", "csv", "--resamples", "1000", "--out", str(tmp_path / "csv"))
    csv_fig = json.loads((tmp_path / "csv" / "simulate.json").read_text())
    assert csv_fig["reading_order"]["arrivals"] == {"pattern": "csv"}


def test_monitor(app: typer.Typer, data: tuple[Path, ScoreTable], tmp_path: Path) -> None:
    folder, table = data
    out = tmp_path / "mon"
    text = invoke(app, "monitor", str(folder / "scores.csv"), "--card", str(folder /
                  "card.yaml"), "--score-column", "score", "--min-n", "20", "--out", str(out))
    assert "vendor-weeks flagged" in text
    fig = assert_report(out, "monitor.html", table, ["monitor.png"])
    assert any(a["vendor"] == "vendor-C" for a in fig["alerts"])  # the generated drift


def test_bad_input_is_a_clear_error_without_values(app: typer.Typer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("exam,woman,score,label\n2.25.1,W1,0.5,1\n2.25.2,W2,ODEGARD^KARI,0\n")
    result = CliRunner().invoke(app, ["evaluate", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "scores-invalid: bad.csv: row 3: column 'score' is not a finite number" in \
        result.output
    assert "ODEGARD" not in result.output and not (tmp_path / "o").exists()
    result = CliRunner().invoke(app, ["simulate", str(bad), "--threshold", "x", "--out",
                                      str(tmp_path / "o")])
    assert result.exit_code == 2 and "NAME=NUMBER" in result.output
    result = CliRunner().invoke(app, ["evaluate", str(bad), "--resamples", "100", "--out",
                                      str(tmp_path / "o")])
    assert result.exit_code == 2  # fewer than 1,000 resamples is refused


def test_the_root_command_does_not_register_them_at_top_level() -> None:
    from service.cli.main import app as root

    names = {c.name for c in root.registered_commands}
    assert not names & {"evaluate", "simulate", "monitor"}
