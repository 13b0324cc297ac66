"""Free-text cleaning by allow-list: only words from a safe vocabulary survive.

Pattern scrubbers (names, dates, phone numbers) miss what nobody wrote a pattern for: a
radiographer's nickname, a date written "3rd of May", a hospital ward. For descriptors in a
screening archive the useful content is a small vocabulary ("L CC", "R MLO", "Screening
Mammography Bilateral"), so the cleaner keeps tokens found in that vocabulary and drops every other
token. Digits survive only as a single digit or as 2D/3D style tokens, so no date, ID or phone
number can pass. The dataset's own PHI tokens are removed even if they happen to be vocabulary
words (a patient called "Rose White", a woman named "Screening" is unlikely but checked).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_VOCABULARY_TEXT = """
l r lt rt left right bilateral bilat unilateral both
cc mlo ml lm lmo xccl xccm xcc fb sio at rl rm id cv spot mag magnification compression
implant implants displaced eklund view views projection projections
screening diagnostic mammography mammogram mammo mg breast breasts digital tomosynthesis
tomo dbt synthetic synthesized 2d 3d c-view cview intelligent combo hd
for presentation processing raw processed image images series study exam examination
routine standard additional repeat recall follow-up followup follow up baseline annual
biopsy guided stereotactic stereo localization localisation specimen wire needle
ultrasound us mri mr ct cr dx pr sr ko report key object selection
contrast enhanced cesm cem low high energy dual subtraction recombined
axilla axillary nipple areola skin marker markers clip chest wall pectoral inframammary
upper lower outer inner quadrant central subareolar retroareolar
calcification calcifications mass masses asymmetry distortion density dense fatty
scattered heterogeneous extremely birads bi-rads category negative benign probably
suspicious malignant malignancy normal abnormal findings finding no evidence of
and or with without the a an in on to at by of from
fuji hologic ge siemens philips agfa carestream kodak planmed ims giotto
selenia dimensions senographe pristina essential mammomat inspiration revelation amulet
cad ai score
"""
DEFAULT_VOCABULARY: tuple[str, ...] = tuple(_VOCABULARY_TEXT.split())

_TOKEN = re.compile(r"[\w\-]+|[^\w\s]", re.UNICODE)
_FUNCTION_WORDS = frozenset(
    {"and", "or", "with", "without", "the", "a", "an", "in", "on", "to", "at", "by", "of",
     "from", "for", "no"})
_PUNCT = {",", "/", "+", ":", ";", "."}
_SAFE_DIGITS = re.compile(r"^(\d|[23]d)$", re.IGNORECASE)


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


class TextCleaner:
    def __init__(self, extra_vocabulary: Iterable[str] = ()) -> None:
        self.vocabulary = {_fold(w) for w in DEFAULT_VOCABULARY}
        self.vocabulary.update(_fold(w) for w in extra_vocabulary)

    def clean(self, value: str, phi_tokens: frozenset[str] = frozenset()) -> str:
        """Keep vocabulary words and harmless separators; drop everything else."""
        kept: list[str] = []
        for line in value.replace("\r", "\n").split("\n"):
            words: list[str] = []
            for tok in _TOKEN.findall(line):
                folded = _fold(tok)
                if folded in phi_tokens:
                    continue
                safe = folded in self.vocabulary or _SAFE_DIGITS.match(tok)
                if safe or (tok in _PUNCT and words):
                    words.append(tok)
            while words and (not _word(words[-1]) or _fold(words[-1]) in _FUNCTION_WORDS):
                words.pop()  # "L CC by" (a name was dropped after it) reads as a fragment
            while words and _fold(words[0]) in _FUNCTION_WORDS - {"no"}:
                words.pop(0)
            if words:
                kept.append(_join(words))
        return "\n".join(kept)


def _word(tok: str) -> bool:
    return any(ch.isalnum() for ch in tok)


def _join(words: list[str]) -> str:
    out = words[0]
    for w in words[1:]:
        out += w if w in {",", ")", ":", ";", "."} else " " + w
    return out


def phi_tokens(values: Iterable[str]) -> frozenset[str]:
    """Word tokens of the dataset's identifying values (names, IDs, places), case-folded."""
    toks: set[str] = set()
    for v in values:
        for t in re.split(r"[\s\^=,.;:/\\()\-]+", v):
            if len(t) >= 2:
                toks.add(_fold(t))
    return frozenset(toks)
