"""Reading a ZIP archive a person uploads, entry by entry, without trusting it.

``read_archive`` first judges the whole archive from its central directory, before a single
byte is decompressed: that it is a ZIP at all (by content, never by name), how many files it
holds, and how large they say they are together. It then hands back the entries one at a time,
each read into memory (never written to disk, so no name can escape anywhere: ``..``, absolute
paths, drive letters and backslashes are still refused as unsafe names, and not read). Each
entry's own declared size and compression ratio are checked before it is read, and its actual
decompressed bytes are counted while reading, because headers can lie.

Directories and the junk that macOS and Windows add (``__MACOSX/``, ``._*``, ``.DS_Store``,
``Thumbs.db``) are skipped silently. What an entry holds is not judged here beyond a ZIP inside
the ZIP (not opened): the caller runs intake on each entry's data.
"""

from __future__ import annotations

import re
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from segmentation.imaging.decode import ImageRejected, size_text

_CHUNK = 64 * 1024
# Only what every ZIP tool writes; bzip2 and LZMA streams decompress without an output bound
# in zipfile, and Deflate64 and AES are not in the standard library at all.
_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
# Starts of a ZIP: a local file header, or the end record of an empty archive.
_ZIP_STARTS = (b"PK\x03\x04", b"PK\x05\x06")
_NESTED_STARTS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_JUNK_NAMES = frozenset({".ds_store", "thumbs.db"})
# Below this size a high compression ratio cannot hurt (a small blank image compresses well).
_RATIO_FLOOR = 64 * 1024
# zipfile parses the whole central directory into memory: before it does, its records are
# bounded by what the allowed files could need (macOS adds a __MACOSX entry for each file and
# folder), and its size by a generous 1 KiB a record (a usual one is under 200 bytes).
_RECORD_ALLOWANCE = 1024

MSG_EMPTY = "This file is empty (0 bytes)."
MSG_NOT_ZIP = "This file is not a ZIP archive."
MSG_CORRUPT = "This ZIP archive is damaged or incomplete, so it cannot be read."
MSG_DIRECTORY = "This ZIP archive's list of contents is far too large, so it was not read."
REFUSED_UNSAFE_NAME = "It has an unsafe name (a path outside the archive), so it was not read."
REFUSED_ENCRYPTED = "It is password-protected, so it could not be read."
REFUSED_METHOD = "It is compressed in a way we cannot read."
REFUSED_LINK = "It is a link, not a file."
REFUSED_NESTED = "A ZIP inside the ZIP is not opened."
REFUSED_DAMAGED = "It is damaged, so it could not be read."
REFUSED_LYING = "It unpacks to more than its header says, so it was not read."


class ArchiveRejected(ImageRejected):
    """A whole archive we will not read, said as intake says it of an image (a sentence for
    the person, and a code: 'empty', 'not_zip', 'corrupt', 'too_many_entries',
    'directory_too_large', 'too_large')."""


@dataclass(frozen=True)
class Entry:
    name: str  # as shown to a person: control and invisible characters replaced, NFC
    data: bytes | None  # None when refused
    refused: str  # "" or why it was not read, a sentence


def read_archive(
    fileobj: IO[bytes],
    *,
    max_entries: int,
    max_entry_bytes: int,
    max_total_bytes: int,
    max_ratio: int = 100,
) -> Iterator[Entry]:
    """The entries of a ZIP in the archive's order, each read when the iterator reaches it.

    Raises ArchiveRejected right away (before anything is decompressed) for an archive that is
    empty, not a ZIP, damaged, holds more than ``max_entries`` files, or whose files say they
    unpack to more than ``max_total_bytes`` together. ``fileobj`` must be seekable.
    """
    fileobj.seek(0, 2)
    size = fileobj.tell()
    fileobj.seek(0)
    if size == 0:
        raise ArchiveRejected(MSG_EMPTY, "empty")
    if fileobj.read(4) not in _ZIP_STARTS:
        raise ArchiveRejected(MSG_NOT_ZIP, "not_zip")
    records, directory_size = _end_record(fileobj, size)
    record_cap = 3 * max_entries + 64
    if records > record_cap:
        raise _too_many(max_entries)
    if directory_size > record_cap * _RECORD_ALLOWANCE:
        raise ArchiveRejected(MSG_DIRECTORY, "directory_too_large")
    fileobj.seek(0)
    try:
        archive = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error, NotImplementedError):
        # ValueError includes a UnicodeDecodeError from a name flagged UTF-8 that is not.
        raise ArchiveRejected(MSG_CORRUPT, "corrupt") from None
    try:
        plan = _plan(archive.infolist(), max_entry_bytes, max_ratio)
        if len(plan) > max_entries:
            raise _too_many(max_entries)
        total = sum(info.file_size for info, _name, refused in plan if not refused)
        if total > max_total_bytes:
            raise ArchiveRejected(
                f"This ZIP archive unpacks to {size_text(total)}; "
                f"the limit is {size_text(max_total_bytes)}.",
                "too_large",
            )
    except BaseException:
        archive.close()
        raise
    return _entries(archive, plan, max_entry_bytes, max_total_bytes)


def _too_many(max_entries: int) -> ArchiveRejected:
    return ArchiveRejected(
        f"This ZIP archive holds more than {max_entries:,} files; that is the limit.",
        "too_many_entries",
    )


def _end_record(fileobj: IO[bytes], size: int) -> tuple[int, int]:
    """(entries, central directory size) as the end record declares them, ZIP64 included,
    read before zipfile parses (and holds in memory) the whole directory."""
    tail_length = min(size, 22 + 0xFFFF + 20)  # the record, its longest comment, ZIP64 locator
    fileobj.seek(size - tail_length)
    tail = fileobj.read(tail_length)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise ArchiveRejected(MSG_CORRUPT, "corrupt")
    entries, directory_size = struct.unpack("<HI", tail[at + 10 : at + 16])
    zip64 = entries == 0xFFFF or directory_size == 0xFFFFFFFF
    if zip64 and at >= 20 and tail[at - 20 : at - 16] == b"PK\x06\x07":
        (zip64_at,) = struct.unpack("<Q", tail[at - 12 : at - 4])
        fileobj.seek(zip64_at)
        record = fileobj.read(56)
        if len(record) == 56 and record[:4] == b"PK\x06\x06":
            entries, directory_size = struct.unpack("<QQ", record[32:48])
    return entries, directory_size


def _plan(
    infos: list[zipfile.ZipInfo], max_entry_bytes: int, max_ratio: int
) -> list[tuple[zipfile.ZipInfo, str, str]]:
    """(info, display name, refusal) for each file entry that is not skipped, judged from the
    central directory alone."""
    plan = []
    for info in infos:
        raw = info.orig_filename
        if raw.endswith(("/", "\\")) or info.is_dir():
            continue
        if _is_junk(raw):
            continue
        plan.append((info, display_name(raw), _refusal(info, max_entry_bytes, max_ratio)))
    return plan


def _is_junk(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    base = parts[-1]
    return "__MACOSX" in parts[:-1] or base.startswith("._") or base.lower() in _JUNK_NAMES


_DRIVE = re.compile(r"^[A-Za-z]:")


def is_unsafe_name(name: str) -> bool:
    """A name that would point outside the folder an archive is unpacked into, on any system."""
    if not name or "\\" in name or "\0" in name or name.startswith("/") or _DRIVE.match(name):
        return True
    return any(part == ".." for part in name.split("/"))


def _refusal(info: zipfile.ZipInfo, max_entry_bytes: int, max_ratio: int) -> str:
    if is_unsafe_name(info.orig_filename):
        return REFUSED_UNSAFE_NAME
    if stat.S_ISLNK(info.external_attr >> 16):
        return REFUSED_LINK
    if info.flag_bits & 0x1:
        return REFUSED_ENCRYPTED
    if info.compress_type not in _METHODS:
        return REFUSED_METHOD
    if info.file_size > max_entry_bytes:
        return f"It is larger than the {size_text(max_entry_bytes)} limit for one file."
    if info.file_size > _RATIO_FLOOR and info.file_size > max_ratio * max(info.compress_size, 1):
        return (
            f"It unpacks to more than {max_ratio:,} times its packed size, as ZIP bombs do, "
            "so it was not read."
        )
    return ""


def display_name(raw: str) -> str:
    """A name fit to show: NFC (macOS writes names decomposed), with control, formatting
    (right-to-left overrides that make 'gpj.exe' read 'exe.jpg') and unassigned characters
    replaced by U+FFFD, and at most 255 characters."""
    name = unicodedata.normalize("NFC", raw)
    name = "".join("\ufffd" if unicodedata.category(c)[0] == "C" else c for c in name)
    return name if len(name) <= 255 else name[:254] + "…"


def _entries(
    archive: zipfile.ZipFile,
    plan: list[tuple[zipfile.ZipInfo, str, str]],
    max_entry_bytes: int,
    max_total_bytes: int,
) -> Iterator[Entry]:
    left = max_total_bytes
    with archive:
        for info, name, refused in plan:
            if refused:
                yield Entry(name, None, refused)
                continue
            budget = min(info.file_size, max_entry_bytes, left)
            data, refused = _read(archive, info, budget)
            if data is not None:
                left -= len(data)
            yield Entry(name, data, refused)


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> tuple[bytes | None, str]:
    """One entry's bytes, decompressed a chunk at a time and counted: reading stops as soon as
    there are more than the budget (the declared size, or what the limits leave)."""
    parts: list[bytes] = []
    total = 0
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                if not parts and chunk[:4] in _NESTED_STARTS:
                    return None, REFUSED_NESTED
                total += len(chunk)
                if total > budget:
                    return None, REFUSED_LYING
                parts.append(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error, struct.error):
        # BadZipFile covers a CRC that does not match, and a local header that disagrees
        # with the central directory.
        return None, REFUSED_DAMAGED
    except (NotImplementedError, RuntimeError):  # a method or encryption the directory hid
        return None, REFUSED_METHOD
    return b"".join(parts), ""
