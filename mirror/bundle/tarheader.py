"""The tar headers a bundle may hold: `GuardedTarInfo` refuses, before tarfile reads their data, the
headers mirror never writes or that tarfile would read whole into memory; `REGULAR` and `kind` name what
a member is.
"""

from __future__ import annotations

import tarfile

from mirror.errors import IntegrityError

# tarfile reads a pax or GNU long-name header's data whole into memory: a crafted 10 GB one would exhaust it.
# mirror writes pax headers only for long paths (at most 4096 bytes each), so this is ample.
MAX_EXTENDED_HEADER = 64 << 10
REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE)


_KINDS = {
    tarfile.SYMTYPE: "a symlink",
    tarfile.LNKTYPE: "a hardlink",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a fifo",
    tarfile.DIRTYPE: "a directory",
    tarfile.CONTTYPE: "a contiguous file",
}


def kind(info: tarfile.TarInfo) -> str:
    return _KINDS.get(info.type, f"of tar type {info.type!r}")


class GuardedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses, before tarfile reads their data, the headers mirror never writes or that
    tarfile would read whole into memory: oversized pax or GNU long-name headers, global pax headers and
    sparse files (whose maps tarfile also reads whole)."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in (tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            if not 0 <= self.size <= MAX_EXTENDED_HEADER:
                raise IntegrityError(
                    f"tar header {self.name!r} announces a {self.size}-byte extended header "
                    f"(limit {MAX_EXTENDED_HEADER}); refusing it"
                )
        elif self.type in (tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_SPARSE):
            raise IntegrityError(
                f"tar header {self.name!r} of type {self.type!r} is not used by mirror; refusing it"
            )
        return super()._proc_member(tarfile_)  # type: ignore[misc, no-any-return]

    def _refuse_sparse(self, *args: object) -> None:
        raise IntegrityError(f"tar header {self.name!r} describes a sparse file; refusing it")

    # Called from _proc_pax on the member a pax header describes, before its sparse map is read.
    _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _refuse_sparse
