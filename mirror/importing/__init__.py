"""Restore a bundle into a layout: verify the whole bundle while streaming it once, then publish repo by repo.

A bundle is one unit: if any of its members is damaged or hostile, nothing of it is published, and the
target is left exactly as it was (see `staging.Staging`). An operator then knows that exit 4 means "nothing
changed", and a set of models meant to be used together never arrives half updated. Once the whole bundle
is verified, each repo is published name by name with atomic renames (refs last), so a SIGKILL at any
moment leaves each repo in its old state or its new one, and running the import again completes it.

What is published never shares an inode across repos (nor across revisions in --no-symlinks trees) unless
`link_shared`: content staged once is copied for each further repo (`fsutil.link_if_private`).

Deltas and volume sets (the bundle index's `in_target`, `volume`, `chunks`): an import unit is one
bundle or the volumes given of one set (`unit.group_bundles`). A repo is published only when every one of
its files is at hand; the others are reported (`MissingRepo`) and left as they were. Of a set, a damaged
volume is dropped whole, and the rest still count; what a set's import verified for repos it could not
complete is kept in the target for the next volumes, given in later runs (`layouts.kept.KeptSet`).

The far side's policy: before anything is published, every revision to publish is scanned from its verified
content and judged by the import's own policy (`judge`); one it denies refuses the whole unit, as damage
does (exit 4, the target as it was).

The modules: `unit` reads each volume's index once and groups the volumes of a set; `plan` decides, without
writing, what is carried, held, taken from the target, missing, and the space needed; `stream` verifies the
volumes into `staging`; `judge` scans and judges what is about to be published; `execute` runs the whole
import and publishes through the layout (`mirror.layouts`).
"""

from mirror.importing.execute import BundleImportError, import_bundle, import_unit, survey
from mirror.importing.judge import PolicyRefused
from mirror.importing.plan import ImportPlan, Kept, TargetView, bytes_to_add, plan_import
from mirror.importing.unit import ImportUnit, Volume, group_bundles

__all__ = [
    "BundleImportError",
    "ImportPlan",
    "ImportUnit",
    "Kept",
    "PolicyRefused",
    "TargetView",
    "Volume",
    "bytes_to_add",
    "group_bundles",
    "import_bundle",
    "import_unit",
    "plan_import",
    "survey",
]
