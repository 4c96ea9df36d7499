"""The policy (fast tier): the manifest's `policy:` section (defaults, per-model overrides key by key),
`--policy FILE`, every key's values and the errors naming file, line and key; the verdict per kind and
rule; licences from the model card and the hub's metadata; the size limit in GNU split units."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror.cards import card_licenses
from mirror.errors import ManifestError
from mirror.manifest import load_manifest, load_policy_file, parse_manifest, parse_policy
from mirror.validate.findings import Finding
from mirror.validate.policy import DEFAULT_POLICY, Policy, Ruling, Verdict, revision_licenses

PICKLE = Finding("model.bin", "pickle", "imports os.system")
CODE = Finding("modeling.py", "remote_code", "Python code")
FLAGGED = Finding("model.bin", "hub_flagged", "the hub's scan: unsafe")
INVALID = Finding("model.safetensors", "invalid", "tensor 'w' ends at byte 96 of 80")


def manifest(*lines: str) -> str:
    """Manifest text; a case's line number is its 1-based position in `lines`."""
    return "\n".join(lines) + "\n"


def policies(text: str) -> list[Policy]:
    return [spec.policy for spec in parse_manifest(text, "manifest.yml").models]


def bad(text: str, parse: str = "manifest") -> ManifestError:
    with pytest.raises(ManifestError) as info:
        policies(text) if parse == "manifest" else parse_policy(text, "policy.yml")
    return info.value


# --- the keys ----------------------------------------------------------------------------------------


def test_defaults_are_the_issues() -> None:
    assert Policy("warn", "warn", "deny", None, None) == DEFAULT_POLICY
    assert policies(manifest("version: 1", "models:", "  - repo: a/b")) == [DEFAULT_POLICY]


def test_every_key_in_defaults_and_a_model_overriding_key_by_key() -> None:
    text = manifest(
        "version: 1",
        "defaults:",
        "  policy:",
        "    pickle: deny",
        "    remote_code: allow",
        "    licenses: [apache-2.0, MIT]",
        "    max_size: 200G",
        "    hub_flagged: warn",
        "models:",
        "  - repo: a/inherits",
        "  - repo: a/overrides",
        "    policy:",
        "      pickle: allow",
        "      licenses: any",
        "      max_size: none",
        "  - repo: a/empty",
        "    policy: {}",
    )
    inherited = Policy("deny", "allow", "warn", frozenset({"apache-2.0", "mit"}), 200 << 30)
    assert policies(text) == [
        inherited,
        Policy("allow", "allow", "warn", None, None),
        inherited,
    ]


@pytest.mark.parametrize("action", ["deny", "warn", "allow"])
@pytest.mark.parametrize("key", ["pickle", "remote_code", "hub_flagged"])
def test_every_action_of_every_ruled_key(key: str, action: str) -> None:
    assert getattr(parse_policy(f"{key}: {action}\n"), key) == action


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("200G", 200 << 30),
        ("25GB", 25 * 10**9),
        ("700M", 700 << 20),
        ("1048576", 1 << 20),
        ("'4096'", 4096),
        ("1K", 1024),
    ],
)
def test_max_size_in_gnu_split_units(value: str, size: int) -> None:
    assert parse_policy(f"max_size: {value}\n").max_size == size


def test_a_model_alone_may_set_a_policy() -> None:
    text = manifest(
        "version: 1", "models:", "  - repo: a/b", "  - repo: a/c", "    policy:", "      pickle: deny"
    )
    assert policies(text) == [DEFAULT_POLICY, Policy(pickle="deny")]


@pytest.mark.parametrize(
    ("lines", "line", "key", "fragment"),
    [
        (["      pickle: block"], 5, "models[0].policy.pickle", "'block' is not one of deny, warn, allow"),
        (["      pickle: Deny"], 5, "models[0].policy.pickle", "(did you mean 'deny'?) is not one of"),
        (["      pickle: no"], 5, "models[0].policy.pickle", "expected a string, got a boolean"),
        (["      remote_code: [deny]"], 5, "models[0].policy.remote_code", "expected a string, got a list"),
        (["      hub_flagged: 1"], 5, "models[0].policy.hub_flagged", "expected a string, got an integer"),
        (["      pickles: deny"], 5, "models[0].policy.pickles", "unknown key (did you mean 'pickle'?)"),
        (["      licenses: mit"], 5, "models[0].policy.licenses", "expected a list of licence ids"),
        (["      licenses: []"], 5, "models[0].policy.licenses", "is empty, which would refuse every model"),
        (
            ["      licenses: [mit, 3]"],
            5,
            "models[0].policy.licenses[1]",
            "expected a string, got an integer",
        ),
        (["      licenses: ['a b']"], 5, "models[0].policy.licenses[0]", "'a b' is not a licence id"),
        (["      max_size: 2X"], 5, "models[0].policy.max_size", "invalid size '2X'"),
        (["      max_size: 0"], 5, "models[0].policy.max_size", "must be more than 0 bytes"),
        (["      max_size: 1.5G"], 5, "models[0].policy.max_size", "invalid size '1.5G'"),
        (["      max_size: [1G]"], 5, "models[0].policy.max_size", "expected a string, got a list"),
        (
            ["      pickle: deny", "      pickle: warn"],
            6,
            "models[0].policy.pickle",
            "duplicate key (first at line 5)",
        ),
    ],
)
def test_bad_policy_in_a_model_names_file_line_and_key(
    lines: list[str], line: int, key: str, fragment: str
) -> None:
    error = bad(manifest("version: 1", "models:", "  - repo: a/b", "    policy:", *lines))
    assert (error.file, error.line, error.key) == ("manifest.yml", line, key)
    assert fragment in error.message
    assert str(error).startswith(f"manifest.yml:{line}: {key}: ")


def test_bad_policy_in_defaults_names_it() -> None:
    error = bad(
        manifest("version: 1", "defaults:", "  policy:", "    pickle: block", "models:", "  - repo: a/b")
    )
    assert str(error) == "manifest.yml:4: defaults.policy.pickle: 'block' is not one of deny, warn, allow"


def test_policy_must_be_a_mapping() -> None:
    error = bad(manifest("version: 1", "models:", "  - repo: a/b", "    policy: deny"))
    assert (error.line, error.key) == (4, "models[0].policy")
    assert "expected a mapping, got a string" in error.message


# --- --policy FILE ---------------------------------------------------------------------------------


def test_policy_file_has_the_keys_at_its_top_level(tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(
        "pickle: deny            # deny | warn | allow\n"
        "remote_code: warn\n"
        "licenses: [apache-2.0, mit]\n"
        "max_size: 200G\n"
        "hub_flagged: deny\n"
    )
    assert load_policy_file(path) == Policy(
        "deny", "warn", "deny", frozenset({"apache-2.0", "mit"}), 200 << 30
    )


def test_policy_file_keys_left_out_keep_their_defaults() -> None:
    assert parse_policy("remote_code: deny\n") == Policy(remote_code="deny")


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"),
    [
        ("pickle: deny\nversion: 1\n", 2, "version", "unknown key; allowed here: pickle, remote_code"),
        ("policy:\n  pickle: deny\n", 1, "policy", "unknown key"),
        ("- pickle: deny\n", 1, None, "expected a mapping, got a list"),
        ("pickle: deny\nmax_size: lots\n", 2, "max_size", "invalid size 'lots'"),
        ("", 1, None, "policy file is empty"),
        ("pickle: [\n", 2, None, "invalid YAML"),
    ],
)
def test_bad_policy_file_names_file_line_and_key(
    text: str, line: int, key: str | None, fragment: str
) -> None:
    error = bad(text, parse="file")
    assert (error.file, error.line, error.key) == ("policy.yml", line, key)
    assert fragment in error.message


def test_policy_file_unreadable_huge_or_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read the policy file"):
        load_policy_file(tmp_path / "absent.yml")
    huge = tmp_path / "huge.yml"
    huge.write_text("# " + "x" * (64 << 10) + "\n")
    with pytest.raises(ManifestError, match="policy file is larger than"):
        load_policy_file(huge)
    latin = tmp_path / "latin.yml"
    latin.write_bytes(b"pickle: d\xe9ny\n")
    with pytest.raises(ManifestError, match="policy file is not UTF-8 text") as info:
        load_policy_file(latin)
    assert info.value.file == str(latin)


def test_policy_file_refuses_a_billion_laughs() -> None:
    laughs = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for level in "bcdef":
        prev = chr(ord(level) - 1)
        laughs.append(f"{level}: &{level} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]")
    error = bad("\n".join(laughs) + "\n", parse="file")
    assert "invalid YAML" in error.message


# --- the verdict ------------------------------------------------------------------------------------


def test_default_verdict_warns_on_pickle_and_code_and_denies_flagged_and_invalid() -> None:
    # rulings in the order of their findings: by path, then kind
    verdict = DEFAULT_POLICY.verdict([PICKLE, CODE, FLAGGED, INVALID], license=None, size=10)
    assert verdict.denied == (
        Ruling(FLAGGED, "policy hub_flagged: deny"),
        Ruling(INVALID, "invalid: always refused"),
    )
    assert verdict.warned == (Ruling(PICKLE, "policy pickle: warn"), Ruling(CODE, "policy remote_code: warn"))
    assert verdict.allowed == ()
    assert not verdict.ok


@pytest.mark.parametrize("action", ["deny", "warn", "allow"])
@pytest.mark.parametrize(
    ("key", "finding"), [("pickle", PICKLE), ("remote_code", CODE), ("hub_flagged", FLAGGED)]
)
def test_each_ruled_kind_follows_its_key(key: str, finding: Finding, action: str) -> None:
    policy = Policy(**{key: action})  # type: ignore[arg-type]
    verdict = policy.verdict([finding], license=None, size=0)
    ruling = Ruling(finding, f"policy {key}: {action}")
    assert (verdict.denied, verdict.warned, verdict.allowed) == (
        (ruling,) if action == "deny" else (),
        (ruling,) if action == "warn" else (),
        (ruling,) if action == "allow" else (),
    )
    assert verdict.ok == (action != "deny")


@pytest.mark.parametrize("policy", [Policy("allow", "allow", "allow"), Policy("warn", "warn", "warn")])
def test_invalid_is_refused_whatever_the_policy(policy: Policy) -> None:
    verdict = policy.verdict([INVALID], license=None, size=0)
    assert verdict.denied == (Ruling(INVALID, "invalid: always refused"),)


def test_nothing_found_is_ok() -> None:
    assert DEFAULT_POLICY.verdict([], license=None, size=1 << 40) == Verdict()
    assert Verdict().ok


ALLOW = Policy(licenses=frozenset({"apache-2.0", "mit"}))
LICENSE_RULE = "policy licenses: apache-2.0, mit"


def test_a_licence_in_the_allowlist_passes_without_regard_to_case() -> None:
    assert ALLOW.verdict([], license="Apache-2.0", size=0).ok
    assert ALLOW.verdict([], license=["mit", "apache-2.0"], size=0).ok


def test_a_licence_outside_the_allowlist_is_denied() -> None:
    verdict = ALLOW.verdict([], license="gpl-3.0", size=0)
    assert verdict.denied == (
        Ruling(
            Finding("", "license", "licence 'gpl-3.0' is not allowed; allowed: apache-2.0, mit"), LICENSE_RULE
        ),
    )


def test_a_list_of_licences_must_all_be_allowed() -> None:
    verdict = ALLOW.verdict([], license=["mit", "cc-by-nc-4.0"], size=0)
    assert [r.finding.detail for r in verdict.denied] == [
        "licence 'cc-by-nc-4.0' is not allowed; allowed: apache-2.0, mit"
    ]


@pytest.mark.parametrize("license", [None, [], ()])
def test_no_licence_with_an_allowlist_is_denied(license: list[str] | None) -> None:
    verdict = ALLOW.verdict([], license=license, size=0)
    assert verdict.denied == (
        Ruling(
            Finding("", "license", "the model card names no licence; allowed: apache-2.0, mit"), LICENSE_RULE
        ),
    )


def test_without_an_allowlist_any_licence_or_none_passes() -> None:
    assert DEFAULT_POLICY.verdict([], license="proprietary", size=0).ok
    assert DEFAULT_POLICY.verdict([], license=None, size=0).ok


def test_a_revision_over_max_size_is_denied() -> None:
    policy = Policy(max_size=200 << 30)
    assert policy.verdict([], license=None, size=200 << 30).ok  # at the limit passes
    verdict = policy.verdict([], license=None, size=(200 << 30) + 1)
    (ruling,) = verdict.denied
    assert ruling.rule == "policy max_size: 200G"
    assert ruling.finding.path == "" and ruling.finding.kind == "size"
    assert ruling.finding.detail == (
        f"the revision is 200.0 GiB ({(200 << 30) + 1} bytes), over max_size 200G ({200 << 30} bytes)"
    )


def test_verdict_json_names_each_finding_and_its_rule() -> None:
    verdict = Policy(pickle="deny").verdict([PICKLE, CODE], license=None, size=0)
    assert verdict.to_json() == {
        "ok": False,
        "denied": [
            {
                "path": "model.bin",
                "kind": "pickle",
                "detail": "imports os.system",
                "rule": "policy pickle: deny",
            }
        ],
        "warned": [
            {
                "path": "modeling.py",
                "kind": "remote_code",
                "detail": "Python code",
                "rule": "policy remote_code: warn",
            }
        ],
        "allowed": [],
    }


def test_the_same_finding_twice_is_ruled_once() -> None:
    assert len(DEFAULT_POLICY.verdict([PICKLE, PICKLE], license=None, size=0).warned) == 1


# --- licences from the card and the hub -----------------------------------------------------------


def test_licences_from_the_readme_front_matter() -> None:
    assert revision_licenses(b"---\nlicense: apache-2.0\n---\n# M\n") == ("apache-2.0",)
    assert revision_licenses(b"---\nlicense: [mit, cc-by-4.0]\n---\n") == ("mit", "cc-by-4.0")
    assert revision_licenses(b"# no front matter\n") == ()
    assert revision_licenses(None) == ()


def test_licences_from_the_hubs_metadata_join_the_cards() -> None:
    readme = b"---\nlicense: mit\n---\n"
    assert revision_licenses(readme, {"license": "mit"}) == ("mit",)
    assert revision_licenses(readme, {"license": ["apache-2.0"]}) == ("mit", "apache-2.0")
    assert revision_licenses(None, {"license": "mit"}) == ("mit",)
    assert ALLOW.verdict([], license=revision_licenses(readme, {"license": "gpl-3.0"}), size=0).denied


def test_a_licence_that_is_not_text_is_kept_and_refused() -> None:
    assert card_licenses({"license": 42}) == ("42",)
    assert card_licenses({"license": [None, {"a": 1}]}) == ('{"a": 1}',)
    assert card_licenses({}) == () and card_licenses(None) == ()
    assert not ALLOW.verdict([], license=card_licenses({"license": {"mit": 1}}), size=0).ok


def test_the_example_manifest_spells_out_the_defaults() -> None:
    example = load_manifest(Path(__file__).resolve().parent.parent / "manifests" / "example.yml")
    assert {spec.policy for spec in example.models} == {DEFAULT_POLICY}


def test_licence_and_size_findings_given_are_judged_again_by_this_policy() -> None:
    recorded = [
        Finding("", "license", "licence 'gpl-3.0' is not allowed; allowed: mit"),
        Finding("", "size", "the revision is 2.0 GiB, over max_size 1G"),
    ]
    assert DEFAULT_POLICY.verdict(recorded, license="gpl-3.0", size=2 << 30) == Verdict()
    verdict = ALLOW.verdict(recorded, license="gpl-3.0", size=0)
    assert [r.finding.detail for r in verdict.denied] == [
        "licence 'gpl-3.0' is not allowed; allowed: apache-2.0, mit"
    ]
