"""The model card: one YAML file beside the weights that says exactly what a score means.

Every score the gateway stores is traceable to one card: the weights' sha256, a Device UID (IHE AI
Results: Contributing Equipment; a new UID whenever the model changes), the architecture, the
preprocessing version *and every parameter of it* (preprocessing decided the thesis's replication:
AUC 0.74 -> 0.94), what the output means, the thresholds of the worklist categories, how view
scores become an exam score, which views are scored and when an exam counts as complete.

The card is validated strictly (unknown keys are errors, ``extra="forbid"``), and errors name the
file, the line and the key. Loading a model checks the weights against the card's sha256 first: a
mismatch refuses to load and names the card and both digest prefixes. This module imports neither
torch nor MONAI: the API and the web UI read cards too.
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from service.core.errors import ConfigurationError

CARD_FILE = "card.yaml"
PREPROCESSING_VERSION: Literal["mammo-1"] = "mammo-1"
DEMO_NOTICE = "synthetic demo model, not for clinical use"
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_EFFICIENTNETS = {f"efficientnet-b{i}" for i in range(8)}
# Set by the loader from the card's input/output sections, so a card cannot say it twice.
_RESERVED_KWARGS = {"spatial_dims", "in_channels", "n_input_channels", "num_classes",
                    "out_channels", "pretrained", "progress"}


class ModelCardError(ConfigurationError):
    """A card is malformed, or its weights are not the ones it describes."""

    code = "model-card-invalid"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Network(StrEnum):
    """The MONAI networks a card may name (``monai.networks.nets``, pure PyTorch)."""

    EfficientNetBN = "EfficientNetBN"
    DenseNet121 = "DenseNet121"
    ResNet = "ResNet"
    SEResNet50 = "SEResNet50"
    SEResNet101 = "SEResNet101"
    SEResNet152 = "SEResNet152"


KwargValue = bool | int | float | str | list[int] | list[float] | list[str]


class InputSize(_Strict):
    rows: int = Field(ge=16, le=8192)
    cols: int = Field(ge=16, le=8192)
    channels: int = Field(default=1, ge=1, le=3)


class Architecture(_Strict):
    kind: Literal["torchscript", "monai"]
    network: Network | None = None
    kwargs: dict[str, KwargValue] = Field(default_factory=dict)
    input: InputSize

    @model_validator(mode="after")
    def _network(self) -> Architecture:
        if self.kind == "monai" and self.network is None:
            raise ValueError("a MONAI architecture names its network")
        reserved = sorted(_RESERVED_KWARGS & set(self.kwargs))
        if reserved:
            raise ValueError(f"kwargs may not set {', '.join(reserved)} (the loader sets them "
                             "from input/output; pretrained is always False)")
        if self.network == Network.EfficientNetBN and \
                self.kwargs.get("model_name") not in _EFFICIENTNETS:
            raise ValueError("EfficientNetBN needs kwargs.model_name efficientnet-b0..b7")
        return self


class Weights(_Strict):
    file: str = Field(pattern=r"^[A-Za-z0-9._-]+$", description="a file name in the model folder")
    sha256: str

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        if not _SHA256.match(v):
            raise ValueError("sha256 is 64 lower-case hex digits")
        return v


class Window(_Strict):
    center: float
    width: float = Field(gt=0)


class Voi(_Strict):
    """How stored values become display values in [0, 1].

    ``header``: the VOI LUT Sequence (if ``prefer_lut``) or window ``header_index`` from the file;
    ``fallback`` when the file has neither. ``window``: the card's own window. ``percentile``:
    a linear window between two percentiles of the image (robust to vendor windows)."""

    mode: Literal["header", "window", "percentile"] = "header"
    header_index: int = Field(default=0, ge=0)
    prefer_lut: bool = True
    window: Window | None = None
    function: Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"] = "LINEAR"
    fallback: Literal["percentile", "window"] = "percentile"
    percentiles: tuple[float, float] = (0.5, 99.5)

    @model_validator(mode="after")
    def _needs(self) -> Voi:
        if (self.mode == "window" or self.fallback == "window") and self.window is None:
            raise ValueError("mode or fallback 'window' needs window: {center, width}")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError("percentiles are 0 <= low < high <= 100")
        return self


class Orientation(_Strict):
    chest_wall: Literal["left", "right"] = "left"
    pixel_mass_check: bool = True   # the brighter half is the chest wall; it overrides a header
    mass_ratio: float = Field(default=1.15, gt=1.0)  # below this the pixel check abstains


class Crop(_Strict):
    threshold: float = Field(default=0.05, gt=0, lt=1)  # on the [0, 1] display scale
    margin: float = Field(default=0.02, ge=0, le=0.25)  # fraction of each side
    analysis_size: int = Field(default=256, ge=32, le=2048)  # long side of the mask grid


class Resize(_Strict):
    interpolation: Literal["area"] = "area"
    pad_value: float = 0.0


class Normalise(_Strict):
    mode: Literal["zscore", "fixed", "none"] = "zscore"
    mean: float = 0.0
    std: float = Field(default=1.0, gt=0)


class Preprocessing(_Strict):
    version: Literal["mammo-1"] = PREPROCESSING_VERSION
    voi: Voi = Field(default_factory=Voi)
    orientation: Orientation = Field(default_factory=Orientation)
    crop: Crop = Field(default_factory=Crop)
    resize: Resize = Field(default_factory=Resize)
    normalise: Normalise = Field(default_factory=Normalise)


class Output(_Strict):
    meaning: str = Field(min_length=10)
    activation: Literal["sigmoid", "softmax", "none"] = "sigmoid"
    num_outputs: int = Field(default=1, ge=1)
    positive_index: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _index(self) -> Output:
        if self.positive_index >= self.num_outputs:
            raise ValueError("positive_index must be below num_outputs")
        if self.activation == "softmax" and self.num_outputs < 2:
            raise ValueError("softmax needs at least two outputs")
        return self


class Thresholds(_Strict):
    """Exam score < likely_normal_below: likely normal; >= priority_at_or_above: priority."""

    likely_normal_below: float
    priority_at_or_above: float

    @model_validator(mode="after")
    def _order(self) -> Thresholds:
        if not self.likely_normal_below < self.priority_at_or_above:
            raise ValueError("likely_normal_below must be below priority_at_or_above")
        return self


class Aggregation(_Strict):
    """Exam score = ``breasts`` over breasts of (``views`` over that breast's views)."""

    views: Literal["mean", "max"] = "mean"
    breasts: Literal["max", "mean"] = "max"

    def describe(self) -> str:
        return f"{self.breasts} over breasts of the {self.views} over each breast's views"


class StandardView(_Strict):
    laterality: Literal["L", "R"]
    view: str = Field(pattern=r"^[A-Z]{2,8}$")


def _four_views() -> list[StandardView]:
    return [StandardView(laterality=lat, view=v) for v in ("CC", "MLO") for lat in ("R", "L")]


Intent = Literal["FOR PRESENTATION", "FOR PROCESSING"]


class ViewSelection(_Strict):
    presentation_intents: list[Intent] = Field(
        default_factory=lambda: list[Intent](["FOR PRESENTATION"]), min_length=1)
    view_codes: list[str] = Field(default_factory=lambda: ["CC", "MLO"], min_length=1)


class Completeness(_Strict):
    required: list[StandardView] = Field(default_factory=_four_views)
    quiet_period_s: int = Field(default=600, ge=0,
                                description="an incomplete exam is scored after this quiet time")


class ModelCard(_Strict):
    schema_version: Literal[1] = 1
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.+_-]{0,31}$")
    device_uid: str
    synthetic_demo: bool
    weights: Weights
    architecture: Architecture
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    output: Output
    thresholds: Thresholds
    aggregation: Aggregation = Field(default_factory=Aggregation)
    views: ViewSelection = Field(default_factory=ViewSelection)
    completeness: Completeness = Field(default_factory=Completeness)
    intended_use: str = Field(min_length=10)
    training_data: str = Field(min_length=10)

    @field_validator("device_uid")
    @classmethod
    def _uid(cls, v: str) -> str:
        if len(v) > 64 or not _UID.match(v):
            raise ValueError("device_uid must be a DICOM UID (digits and dots, <= 64 characters)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        if self.synthetic_demo and DEMO_NOTICE not in self.intended_use:
            raise ValueError(f"a synthetic demo card's intended_use must say {DEMO_NOTICE!r}")
        if self.output.activation != "none":
            for v in (self.thresholds.likely_normal_below, self.thresholds.priority_at_or_above):
                if not 0 <= v <= 1:
                    raise ValueError("thresholds of a sigmoid/softmax output lie in [0, 1]")
        return self

    @property
    def display_name(self) -> str:
        """What every page, report and SR shows; demo models say so, always."""
        label = f"{self.name} {self.version}"
        return f"{label} ({DEMO_NOTICE})" if self.synthetic_demo else label


# ---------------------------------------------------------------- reading, writing, hashing


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The line (1-based) of the deepest YAML node that a pydantic error location reaches."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            hit = next(((k, v) for k, v in node.value if k.value == part), None)
            if hit is None:
                break
            line, node = hit[0].start_mark.line + 1, hit[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) \
                and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def parse_card(text: str, source: str = CARD_FILE) -> ModelCard:
    """Validate card YAML; errors read ``<source>:<line>: <key>: <problem>``."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ModelCardError(f"{source}:{mark.line + 1 if mark else '?'}: YAML error: "
                             f"{exc.problem or exc}") from None
    if not isinstance(raw, dict):
        raise ModelCardError(f"{source}:1: a model card is a YAML mapping")
    try:
        return ModelCard.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            loc = tuple(err["loc"])
            key = ".".join(str(p) for p in loc) or "(card)"
            problems.append(f"{source}:{_line_of(node, loc) or '?'}: {key}: {err['msg']}")
        raise ModelCardError("; ".join(problems)) from None


def load_card(folder_or_file: Path) -> ModelCard:
    path = Path(folder_or_file)
    if path.is_dir():
        path = path / CARD_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelCardError(f"{path}: cannot read model card ({exc.strerror})") from None
    return parse_card(text, str(path))


def card_yaml(card: ModelCard) -> str:
    data = card.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def write_card(card: ModelCard, folder: Path) -> Path:
    path = Path(folder) / CARD_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(card_yaml(card), encoding="utf-8")
    tmp.replace(path)
    return path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def device_uid_for(sha256: str, name: str, version: str) -> str:
    """A Device UID derived from the weights (2.25 = UUID-derived root): new weights, new UID."""
    digest = hashlib.sha256(f"{name}\0{version}\0{sha256}".encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def verify_weights(card: ModelCard, folder: Path) -> Path:
    """The weights file, after checking it is the one the card describes; refuses otherwise."""
    path = Path(folder) / card.weights.file
    if not path.is_file():
        raise ModelCardError(f"{Path(folder) / CARD_FILE}: weights file {card.weights.file!r} "
                             "is missing")
    actual = file_sha256(path)
    if actual != card.weights.sha256:
        raise ModelCardError(
            f"{Path(folder) / CARD_FILE}: weights {card.weights.file!r} do not match the card "
            f"(sha256 expected {card.weights.sha256[:12]}..., actual {actual[:12]}...); "
            "refusing to load"
        )
    return path
