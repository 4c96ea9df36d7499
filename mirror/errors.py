"""The one exception tree of mirror: each class carries its exit code and a message that says what to do."""

from __future__ import annotations

from mirror.exits import ExitCode


class MirrorError(Exception):
    """A failure the CLI reports in one line and maps to an exit code."""

    exit_code = ExitCode.FAILURE


class HubError(MirrorError):
    """The hub answered with an error or could not be reached (exit 1)."""


class RetryableError(HubError):
    """A failure that may pass: a dropped connection, a cut-off body, a 5xx or a 429."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotFoundError(HubError):
    """A repo, revision or file does not exist upstream, or is gated/private without a token."""


class UsageError(MirrorError):
    """Bad command-line usage (exit 2)."""

    exit_code = ExitCode.USAGE


class ManifestError(MirrorError):
    """An invalid manifest; the message names the file, the line and the key (exit 2)."""

    exit_code = ExitCode.USAGE

    def __init__(
        self, message: str, *, file: str | None = None, line: int | None = None, key: str | None = None
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.key = key
        where = ":".join(str(p) for p in (file, line) if p is not None)
        parts = [p for p in (where, key) if p]
        super().__init__(": ".join([*parts, message]))


class PartialError(MirrorError):
    """Some items failed; the rest were done (exit 3)."""

    exit_code = ExitCode.PARTIAL


class PolicyDenied(MirrorError):
    """A revision the policy refuses (a sync: exit 3, the others are done, its refs are not moved; an export:
    exit 3, nothing is written)."""

    exit_code = ExitCode.PARTIAL


class IntegrityError(MirrorError):
    """A hash or size mismatch, a corrupt or hostile bundle (exit 4)."""

    exit_code = ExitCode.INTEGRITY


class DamagedBlobError(IntegrityError):
    """A blob of the store is not what its name says (exit 4). It is marked in doubt, so the next sync that
    needs it fetches it again: `repair` is that command when the caller knows it, else the revisions that
    use the blob say which manifest to sync."""

    def __init__(
        self, detail: str, revisions: tuple[str, ...], repair: str | None = None, unmarked: str | None = None
    ) -> None:
        self.detail, self.revisions, self.repair, self.unmarked = detail, revisions, repair, unmarked
        if unmarked is not None:  # then a sync would trust it (right size): it has to go first
            mark = f"it could not be marked for a fresh download ({unmarked}), so delete it first"
        else:
            mark = "it is marked for a fresh download"
        if repair is not None:
            todo = f"run `{repair}` to fetch it again, then try again"
        elif revisions:
            todo = f"run `mirror sync` with a manifest that names {', '.join(revisions)} to fetch it again"
        else:
            todo = "no snapshot uses it: `mirror gc` removes it"
        super().__init__(f"{detail}; {mark}: {todo}")


class LockedError(MirrorError):
    """Another run holds the store lock (exit 75, EX_TEMPFAIL)."""

    exit_code = ExitCode.LOCKED


class Interrupted(MirrorError):
    """A signal (Ctrl-C or SIGTERM, one path) stopped the run; what was complete is kept (exit 130)."""

    exit_code = ExitCode.INTERRUPTED
