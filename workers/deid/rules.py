"""Compiled rule lookup: which rule governs one element, and the concrete action it takes.

Precedence, most specific first: exact tag or keyword; private creator + element offset; tag
pattern with x wildcards (more fixed digits first); all private (odd groups); VR; other. So a
mammography layer can keep ``ImageLaterality`` while ``(60xx,xxxx)``-style patterns and ``vr: PN``
only catch what nothing more specific names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.datadict import tag_for_keyword

from service.core.errors import PolicyError
from workers.deid import iod
from workers.deid.policy_schema import Rule, SafePrivate
from workers.deid.vocabulary import Action, Option, TagPattern

# When two enabled options give one row different actions, the one that retains less wins.
_CONSERVATIVE = [
    Action.REMOVE, Action.EMPTY, Action.DUMMY, Action.SAFE_PRIVATE, Action.CLEAN, Action.SHIFT,
    Action.PSEUDONYM, Action.UID, Action.KEEP,
]  # fmt: skip


@dataclass(frozen=True)
class Decision:
    """The rule that matched, the action written in it, and the concrete action taken."""

    rule: Rule | None
    written: Action
    action: Action
    via: str  # "basic", an option name, or "iod-type-N" / "iod-unknown" for combined actions


class RuleSet:
    """The merged rules of one policy, indexed for lookup (built once per policy, at load)."""

    def __init__(self, rules: Iterable[Rule], options: frozenset[Option],
                 safe_private: Iterable[SafePrivate]) -> None:
        self.options = options
        self.exact: dict[int, Rule] = {}
        self.patterns: list[tuple[TagPattern, Rule]] = []
        self.creators: dict[tuple[str, int], Rule] = {}
        self.private_all: Rule | None = None
        self.vr: dict[str, Rule] = {}
        self.other: Rule | None = None
        for rule in rules:
            if rule.keyword is not None:
                self.exact[int(tag_for_keyword(rule.keyword))] = rule  # type: ignore[arg-type]
            elif rule.tag is not None:
                pat = TagPattern.parse(rule.tag)
                if pat.exact:
                    self.exact[pat.value] = rule
                else:
                    self.patterns.append((pat, rule))
            elif rule.private_creator is not None:
                self.creators[(rule.private_creator.strip(), int(str(rule.element), 16))] = rule
            elif rule.private:
                self.private_all = rule
            elif rule.vr is not None:
                self.vr[rule.vr] = rule
            else:
                self.other = rule
            for act in (rule.action, *rule.options.values()):
                if act is Action.SAFE_PRIVATE and not (rule.private or rule.private_creator):
                    raise PolicyError(
                        f"rule {rule.describe()}: safe-private applies to private attributes only")
        self.patterns.sort(key=lambda pr: -pr[0].specificity)
        self.safe_private = {(s.creator.strip(), int(s.element, 16)) for s in safe_private}

    def match(self, tag: int, vr: str, creator: str | None = None) -> Rule | None:
        rule = self.exact.get(tag)
        if rule is not None:
            return rule
        private = (tag >> 16) % 2 == 1
        if private and creator is not None:
            rule = self.creators.get((creator.strip(), tag & 0xFF))
            if rule is not None:
                return rule
        for pat, prule in self.patterns:
            if pat.matches(tag):
                return prule
        if private and self.private_all is not None:
            return self.private_all
        rule = self.vr.get(vr)
        if rule is not None:
            return rule
        return self.other

    def decide(self, rule: Rule | None, *, sop_class: str | None, tag: int, top: bool) -> Decision:
        """The concrete action for ``rule`` on this element (options, then IOD type)."""
        if rule is None:
            return Decision(None, Action.REMOVE, Action.REMOVE, "no-rule")
        written = rule.action
        via = "basic"
        enabled = [(o, a) for o, a in rule.options.items() if o in self.options]
        if enabled:
            opt, written = min(enabled, key=lambda oa: _CONSERVATIVE.index(oa[1])
                               if oa[1] in _CONSERVATIVE else len(_CONSERVATIVE))
            via = opt.value
        action = written
        if written.combined:
            t = iod.attribute_type(sop_class, tag) if top else None
            action = iod.resolve(written, t)
            via = f"{via}; iod-type-{t}" if t else f"{via}; iod-unknown"
        return Decision(rule, written, action, via)
