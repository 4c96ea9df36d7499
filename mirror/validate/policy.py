"""The policy (the manifest's `policy:` section, `--policy FILE`) and the verdict it gives a revision's
findings: which are denied, which only warned about, which allowed, each with the rule that decided.

A finding's kind is the policy key that rules on it (`mirror.validate.findings`): `pickle`,
`remote_code` and `hub_flagged` are each deny, warn or allow; `invalid` (a header that does not hold
together) is always denied. The licence allowlist and `max_size` are judged here, from the licences the
model card and the hub name and the revision's size; what breaks them becomes a finding of kind `license`
or `size` (path "", the revision as a whole). Parsing the YAML is the manifest's (`mirror.manifest.policy`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from mirror.cards import card_data, card_licenses
from mirror.units import format_size, human_size
from mirror.validate.findings import Finding

Action = Literal["deny", "warn", "allow"]
ACTIONS: tuple[str, ...] = get_args(Action)
RULED = ("pickle", "remote_code", "hub_flagged")  # the finding kinds a policy key rules on
KEYS = ("pickle", "remote_code", "licenses", "max_size", "hub_flagged")  # the keys of a `policy:` mapping
JUDGED = ("license", "size")  # the finding kinds the policy makes itself, from a revision's licence and size
ALWAYS = "invalid: always refused"


@dataclass(frozen=True)
class Policy:
    """The far side's (or the near side's) rules; the defaults are the issue's: pickle and remote code
    warned about, what the hub's scan flagged denied, any licence, any size."""

    pickle: Action = "warn"
    remote_code: Action = "warn"
    hub_flagged: Action = "deny"
    licenses: frozenset[str] | None = None  # an allowlist, compared without case; None: any licence
    max_size: int | None = None  # bytes; None: any size

    def action(self, kind: str) -> Action:
        """What the policy does with a finding of `kind` (license/size findings exist only when denied)."""
        if kind in RULED:
            action: Action = getattr(self, kind)
            return action
        return "deny"

    def rule(self, kind: str) -> str:
        """The rule that decides a finding of `kind`, as a report names it ("policy pickle: deny")."""
        if kind in RULED:
            return f"policy {kind}: {self.action(kind)}"
        if kind == "license" and self.licenses is not None:
            return f"policy licenses: {', '.join(sorted(self.licenses))}"
        if kind == "size" and self.max_size is not None:
            return f"policy max_size: {format_size(self.max_size)}"
        return ALWAYS

    def verdict(
        self, findings: Iterable[Finding], *, license: str | Sequence[str] | None, size: int
    ) -> Verdict:
        """The verdict on a revision: its files' findings, its licence(s) (`revision_licenses`) and its size
        in bytes. `invalid` findings are always denied. Findings of kind `license` or `size` are this
        policy's own, from `license` and `size`: any given (another policy's, recorded) are left out."""
        licenses = (license,) if isinstance(license, str) else tuple(license or ())
        by_action: dict[Action, list[Ruling]] = {"deny": [], "warn": [], "allow": []}
        own = {f for f in findings if f.kind not in JUDGED}
        for finding in sorted({*own, *self.judge(licenses, size)}):
            by_action[self.action(finding.kind)].append(Ruling(finding, self.rule(finding.kind)))
        return Verdict(tuple(by_action["deny"]), tuple(by_action["warn"]), tuple(by_action["allow"]))

    def judge(self, licenses: Sequence[str], size: int) -> list[Finding]:
        """The findings of the revision as a whole: a licence outside the allowlist (every licence the card
        names must be allowed; naming none is denied too, as nothing shows the model may be used), a size
        over max_size."""
        found: list[Finding] = []
        if self.licenses is not None:
            allowed = ", ".join(sorted(self.licenses))
            if not licenses:
                found.append(Finding("", "license", f"the model card names no licence; allowed: {allowed}"))
            for name in licenses:
                if name.casefold() not in {allow.casefold() for allow in self.licenses}:
                    found.append(
                        Finding("", "license", f"licence {name!r} is not allowed; allowed: {allowed}")
                    )
        if self.max_size is not None and size > self.max_size:
            found.append(
                Finding(
                    "",
                    "size",
                    f"the revision is {human_size(size)} ({size} bytes), over max_size "
                    f"{format_size(self.max_size)} ({self.max_size} bytes)",
                )
            )
        return found


DEFAULT_POLICY = Policy()


@dataclass(frozen=True, order=True)
class Ruling:
    """A finding and the rule that decided it."""

    finding: Finding
    rule: str

    def to_json(self) -> dict[str, Any]:
        return {**self.finding.to_json(), "rule": self.rule}


def ruling_words(ruling: Ruling) -> str:
    """One finding and its rule, as a report line says it ("model.bin: imports posix.system (policy pickle:
    deny)"); a finding of the revision as a whole is "the revision: ..."."""
    finding = ruling.finding
    return f"{finding.path or 'the revision'}: {finding.detail} ({ruling.rule})"


@dataclass(frozen=True)
class Verdict:
    """Every finding of a revision, sorted into what the policy denies, warns about and allows."""

    denied: tuple[Ruling, ...] = ()
    warned: tuple[Ruling, ...] = ()
    allowed: tuple[Ruling, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the revision may pass (nothing denied)."""
        return not self.denied

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "denied": [r.to_json() for r in self.denied],
            "warned": [r.to_json() for r in self.warned],
            "allowed": [r.to_json() for r in self.allowed],
        }


def revision_licenses(readme: bytes | None, hub_card: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The licences a revision names: its README's front matter `license:` and, when the caller has the
    hub's metadata, its `cardData.license` (pass `cardData`); each once, in the order found."""
    found = card_licenses(card_data(readme)) if readme is not None else ()
    return tuple(dict.fromkeys((*found, *card_licenses(hub_card))))
