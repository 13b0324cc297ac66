"""Model cards are validated strictly, errors name file, line and key; a demo card says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.score.card import (
    DEMO_NOTICE,
    ModelCardError,
    card_yaml,
    device_uid_for,
    load_card,
    parse_card,
    verify_weights,
    write_card,
)

SAMPLE = """\
schema_version: 1
name: site-b0
version: "2.1"
device_uid: 1.2.826.0.1.3680043.10.1234.7
synthetic_demo: false
weights:
  file: model.pt
  sha256: {sha}
architecture:
  kind: monai
  network: EfficientNetBN
  kwargs:
    model_name: efficientnet-b0
  input: {{rows: 1024, cols: 832, channels: 1}}
preprocessing:
  version: mammo-1
  voi: {{mode: header, fallback: percentile, percentiles: [0.5, 99.5]}}
  orientation: {{chest_wall: left, pixel_mass_check: true}}
  crop: {{threshold: 0.05, margin: 0.02}}
  normalise: {{mode: zscore}}
output:
  meaning: probability of malignancy within the screening interval
  activation: sigmoid
thresholds: {{likely_normal_below: 0.05, priority_at_or_above: 0.5}}
aggregation: {{views: mean, breasts: max}}
views: {{presentation_intents: [FOR PRESENTATION], view_codes: [CC, MLO]}}
completeness:
  required:
    - {{laterality: R, view: CC}}
    - {{laterality: L, view: CC}}
  quiet_period_s: 300
intended_use: triage ordering of screening exams, research use
training_data: 12,000 screening exams from site B, 2015-2020, split by woman
"""
SHA = "ab" * 32


def test_sample_card_parses_with_every_section() -> None:
    card = parse_card(SAMPLE.format(sha=SHA))
    assert card.architecture.network == "EfficientNetBN"
    assert (card.architecture.input.rows, card.architecture.input.cols) == (1024, 832)
    assert card.preprocessing.version == "mammo-1"
    assert [(v.laterality, v.view) for v in card.completeness.required] == [("R", "CC"),
                                                                            ("L", "CC")]
    assert card.aggregation.describe() == "max over breasts of the mean over each breast's views"
    assert card.display_name == "site-b0 2.1"
    assert parse_card(card_yaml(card)) == card  # what we write, we read back


@pytest.mark.parametrize(("edit", "line", "key", "words"), [
    (("  activation: sigmoid", "  activation: sigmoid\n  colour: red"), 24, "output.colour",
     "Extra inputs"),
    (("device_uid: 1.2.826.0.1.3680043.10.1234.7", "device_uid: 1.2.x"), 4, "device_uid",
     "DICOM UID"),
    (("    model_name: efficientnet-b0", "    model_name: efficientnet-b9"), 9,
     "architecture:", "efficientnet-b0..b7"),
    (("    model_name: efficientnet-b0", "    model_name: efficientnet-b0\n    pretrained: true"),
     9, "architecture", "pretrained"),
    (("likely_normal_below: 0.05", "likely_normal_below: 0.7"), 24, "thresholds", "below"),
    (("    - {laterality: L, view: CC}", "    - {laterality: B, view: CC}"), 30,
     "completeness.required.1.laterality", "'L' or 'R'"),
    ((f"  sha256: {SHA}", "  sha256: ABC"), 8, "weights.sha256", "64 lower-case hex"),
])
def test_errors_name_file_line_and_key(edit: tuple[str, str], line: int, key: str,
                                       words: str) -> None:
    text = SAMPLE.format(sha=SHA).replace(*edit)
    assert text != SAMPLE.format(sha=SHA)
    with pytest.raises(ModelCardError) as err:
        parse_card(text, "site/card.yaml")
    msg = str(err.value)
    assert f"site/card.yaml:{line}: {key}" in msg, msg
    assert words in msg


def test_yaml_syntax_error_names_line() -> None:
    with pytest.raises(ModelCardError, match=r"c.yaml:2: YAML error: mapping values"):
        parse_card("name: a\nversion: x: y\n", "c.yaml")


def test_demo_card_must_say_so_and_displays_say_so() -> None:
    text = SAMPLE.format(sha=SHA).replace("synthetic_demo: false", "synthetic_demo: true")
    with pytest.raises(ModelCardError, match="intended_use must say"):
        parse_card(text)
    text = text.replace("intended_use: triage", f"intended_use: {DEMO_NOTICE}; triage")
    card = parse_card(text)
    assert card.display_name == f"site-b0 2.1 ({DEMO_NOTICE})"


def test_weights_hash_mismatch_refuses_with_both_prefixes(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"weights v1")
    card = parse_card(SAMPLE.format(sha=SHA))
    write_card(card, tmp_path)
    assert load_card(tmp_path) == card
    with pytest.raises(ModelCardError) as err:
        verify_weights(card, tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "card.yaml") in msg
    assert f"expected {SHA[:12]}" in msg and "refusing to load" in msg
    import hashlib

    assert f"actual {hashlib.sha256(b'weights v1').hexdigest()[:12]}" in msg
    (tmp_path / "model.pt").unlink()
    with pytest.raises(ModelCardError, match="missing"):
        verify_weights(card, tmp_path)


def test_device_uid_changes_with_the_weights() -> None:
    a, b = device_uid_for("1" * 64, "m", "1"), device_uid_for("2" * 64, "m", "1")
    assert a != b and a.startswith("2.25.") and len(a) <= 64
    assert parse_card(SAMPLE.format(sha=SHA).replace(
        "1.2.826.0.1.3680043.10.1234.7", a)).device_uid == a
