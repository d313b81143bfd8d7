"""Reading ZIP archives people upload: real archives made with zipfile, hostile ones made by
patching their bytes."""

from __future__ import annotations

import io
import os
import struct
import zipfile
from pathlib import Path

import pytest

from segmentation.imaging.archive import (
    MSG_CORRUPT,
    MSG_DIRECTORY,
    MSG_EMPTY,
    MSG_NOT_ZIP,
    REFUSED_DAMAGED,
    REFUSED_ENCRYPTED,
    REFUSED_LINK,
    REFUSED_METHOD,
    REFUSED_NESTED,
    REFUSED_UNSAFE_NAME,
    ArchiveRejected,
    Entry,
    read_archive,
)
from tests.sample_images import IMAGES

MiB = 1024 * 1024
LIMITS = {"max_entries": 100, "max_entry_bytes": 10 * MiB, "max_total_bytes": 50 * MiB}
CAT = (IMAGES / "cat.jpg").read_bytes()
PNG = (IMAGES / "tiny-1x1.png").read_bytes()


def make_zip(
    files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED, comment: bytes = b""
) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=method)
        archive.comment = comment
    return buf.getvalue()


def read(data: bytes, **limits: int) -> list[Entry]:
    return list(read_archive(io.BytesIO(data), **{**LIMITS, **limits}))


def refused(data: bytes, **limits: int) -> ArchiveRejected:
    with pytest.raises(ArchiveRejected) as info:
        read_archive(io.BytesIO(data), **{**LIMITS, **limits})
    return info.value


def headers(data: bytes) -> tuple[list[int], list[int]]:
    """Offsets of the local file headers and of the central directory records."""
    local, central = [], []
    at = data.find(b"PK\x03\x04")
    while at >= 0:
        local.append(at)
        at = data.find(b"PK\x03\x04", at + 4)
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        central.append(at)
        at = data.find(b"PK\x01\x02", at + 4)
    return local, central


def patched_sizes(data: bytes, file_size: int) -> bytes:
    """Every header of a one-entry archive made to claim ``file_size`` uncompressed bytes."""
    out = bytearray(data)
    (local,), (central,) = headers(data)
    struct.pack_into("<I", out, local + 22, file_size)
    struct.pack_into("<I", out, central + 24, file_size)
    return bytes(out)


def zeros_zip(name: str, size: int, count: int = 1) -> bytes:
    """``count`` entries of ``size`` zero bytes, written a MiB at a time."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        chunk = bytes(MiB)
        for number in range(count):
            with archive.open(f"{number}-{name}" if count > 1 else name, "w") as f:
                for _ in range(size // MiB):
                    f.write(chunk)
                f.write(bytes(size % MiB))
    return buf.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return zeros_zip("zeros.bin", 200 * MiB)


# --- good archives --------------------------------------------------------------------------------


def test_a_zip_of_photos_gives_each_photo_in_the_archives_order() -> None:
    data = make_zip({"b.jpg": CAT, "a/tiny.png": PNG, "notes.txt": b"hello"})
    assert read(data) == [
        Entry("b.jpg", CAT, ""),
        Entry("a/tiny.png", PNG, ""),
        Entry("notes.txt", b"hello", ""),  # not judged here: intake refuses it
    ]


def test_stored_entries_are_read_too() -> None:
    assert read(make_zip({"cat.jpg": CAT}, zipfile.ZIP_STORED)) == [Entry("cat.jpg", CAT, "")]


def test_an_empty_zip_has_no_entries() -> None:
    assert read(make_zip({})) == []


def test_directories_and_system_junk_are_skipped_silently() -> None:
    data = make_zip(
        {
            "holiday/": b"",
            "holiday/cat.jpg": CAT,
            "__MACOSX/holiday/._cat.jpg": b"\0\5\x16\7 resource fork",
            "holiday/._cat.jpg": b"\0\5\x16\7",
            "holiday/.DS_Store": b"Bud1",
            "Thumbs.db": b"\xd0\xcf\x11\xe0",
            "THUMBS.DB": b"\xd0\xcf\x11\xe0",
        }
    )
    assert read(data) == [Entry("holiday/cat.jpg", CAT, "")]


def test_junk_does_not_count_towards_the_file_limit() -> None:
    files = {f"p{n}.png": PNG for n in range(3)}
    junk = {f"__MACOSX/._p{n}.png": b"x" for n in range(3)}
    assert len(read(make_zip({**files, **junk, "d/": b""}), max_entries=3)) == 3


def test_names_are_decoded_as_zipfile_does_and_shown_safely() -> None:
    data = make_zip(
        {
            "caf\u00e9.jpg": PNG,  # written with the UTF-8 flag
            "cafe\u0301-nfd.jpg": PNG,  # as macOS writes names: decomposed
            "photo\u202egpj.exe": PNG,  # a right-to-left override hiding an .exe
            "bell\x07.png": PNG,
        }
    )
    assert [e.name for e in read(data)] == [
        "caf\u00e9.jpg",
        "caf\u00e9-nfd.jpg",
        "photo\ufffdgpj.exe",
        "bell\ufffd.png",
    ]


def test_a_name_without_the_utf8_flag_is_read_as_cp437() -> None:
    data = bytearray(make_zip({"xxxx.jpg": PNG}))
    for at in (i for offsets in headers(bytes(data)) for i in offsets):
        name_at = at + (30 if data[at + 2 : at + 4] == b"\x03\x04" else 46)
        data[name_at : name_at + 4] = "Ärger".encode("cp437")[:4]  # 0x8e = Ä in cp437
    assert [e.name for e in read(bytes(data))] == ["Ärge.jpg"]


def test_a_very_long_name_is_shortened_for_display() -> None:
    (entry,) = read(make_zip({"x" * 400 + ".png": PNG}))
    assert len(entry.name) == 255 and entry.name.endswith("…") and entry.data == PNG


def test_entries_are_read_one_at_a_time_as_the_iterator_reaches_them() -> None:
    data = bytearray(make_zip({"first.png": PNG, "second.jpg": CAT}))
    entries = read_archive(io.BytesIO(bytes(data)), **LIMITS)
    assert next(entries) == Entry("first.png", PNG, "")
    assert next(entries) == Entry("second.jpg", CAT, "")
    with pytest.raises(StopIteration):
        next(entries)


# --- whole archives refused -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code", "message"),
    [
        (b"", "empty", MSG_EMPTY),
        (PNG, "not_zip", MSG_NOT_ZIP),  # a PNG renamed .zip: judged by content
        (os.urandom(4096), "not_zip", MSG_NOT_ZIP),
        (b"PK", "not_zip", MSG_NOT_ZIP),
        (b"%PDF-1.7\n" + make_zip({"a.png": PNG}), "not_zip", MSG_NOT_ZIP),  # ZIP stuck behind
    ],
    ids=["empty", "png", "random", "two-bytes", "zip-behind-something-else"],
)
def test_what_is_not_a_zip_is_refused_whole(data: bytes, code: str, message: str) -> None:
    exc = refused(data)
    assert (exc.code, exc.message, str(exc)) == (code, message, message)
    assert isinstance(exc, ValueError)


@pytest.mark.parametrize("keep", [4, 30, 0.5, -22, -1])
def test_a_truncated_zip_is_refused_whole_as_damaged(keep: float) -> None:
    data = make_zip({"cat.jpg": CAT, "tiny.png": PNG})
    cut = int(len(data) * keep) if isinstance(keep, float) else keep
    exc = refused(data[:cut])
    assert (exc.code, exc.message) == ("corrupt", MSG_CORRUPT)


def test_a_damaged_central_directory_is_refused_whole() -> None:
    data = bytearray(make_zip({"cat.jpg": CAT, "tiny.png": PNG}))
    _, (_, second) = headers(bytes(data))
    data[second : second + 4] = b"XXXX"
    assert refused(bytes(data)).code == "corrupt"


def test_a_name_flagged_utf8_that_is_not_makes_the_directory_damaged() -> None:
    data = bytearray(make_zip({"caf\u00e9.jpg": PNG}))
    assert data.count("\u00e9".encode()) == 2  # in the local header and the directory
    data = data.replace("\u00e9".encode(), b"\xff\xfe")
    assert refused(bytes(data)).code == "corrupt"


def test_too_many_files_are_refused_whole() -> None:
    data = make_zip({f"p{n}.png": PNG for n in range(4)})
    assert len(read(data, max_entries=4)) == 4
    exc = refused(data, max_entries=3)
    assert (exc.code, exc.message) == (
        "too_many_entries",
        "This ZIP archive holds more than 3 files; that is the limit.",
    )


def test_an_end_record_claiming_a_million_entries_is_refused_before_parsing() -> None:
    data = bytearray(make_zip({"a.png": PNG}))
    end = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, end + 8, 0xFFFE, 0xFFFE)
    assert refused(bytes(data)).code == "too_many_entries"


def test_a_huge_central_directory_is_refused_before_parsing() -> None:
    # Five files, but 150 KB of directory: more than 10 files could need (1 KiB a record).
    data = make_zip({f"{n}-{'x' * 30_000}.png": PNG for n in range(5)})
    assert len(read(data, max_entries=100)) == 5
    exc = refused(data, max_entries=10)
    assert (exc.code, exc.message) == ("directory_too_large", MSG_DIRECTORY)


def test_files_that_unpack_to_more_than_the_total_limit_are_refused_whole() -> None:
    # Five entries of 3 MiB of zeros: each fine, 15 MiB together.
    data = zeros_zip("zeros.bin", 3 * MiB, count=5)
    exc = refused(data, max_total_bytes=10 * MiB, max_ratio=10**6)
    assert (exc.code, exc.message) == (
        "too_large",
        "This ZIP archive unpacks to 15 MiB; the limit is 10 MiB.",
    )
    assert len(read(data, max_total_bytes=15 * MiB, max_ratio=10**6)) == 5


def test_a_zip_bomb_is_refused_from_its_directory_without_decompressing(bomb: bytes) -> None:
    # 200 MiB of zeros in 0.2 MB: refused by its declared size, then by its ratio.
    assert len(bomb) < MiB
    (entry,) = read(bomb, max_entry_bytes=50 * MiB, max_total_bytes=50 * MiB)
    assert (entry.name, entry.data) == ("zeros.bin", None)
    assert entry.refused == "It is larger than the 50 MiB limit for one file."
    (entry,) = read(bomb, max_entry_bytes=300 * MiB, max_total_bytes=300 * MiB)
    assert entry.data is None
    assert entry.refused == (
        "It unpacks to more than 100 times its packed size, as ZIP bombs do, so it was not read."
    )


def test_a_bomb_whose_headers_lie_about_its_size_gives_no_more_than_they_say(
    bomb: bytes,
) -> None:
    lying = patched_sizes(bomb, 1000)
    info = zipfile.ZipFile(io.BytesIO(lying)).infolist()[0]
    assert info.file_size == 1000 < info.compress_size  # no ratio, no size: nothing to see
    (entry,) = read(lying)
    assert (entry.data, entry.refused) == (None, REFUSED_DAMAGED)


# --- single entries refused -----------------------------------------------------------------------


def test_a_file_over_the_size_limit_is_refused_and_the_rest_read() -> None:
    data = make_zip({"big.jpg": CAT, "small.png": PNG})
    assert read(data, max_entry_bytes=len(CAT) - 1) == [
        Entry("big.jpg", None, f"It is larger than the {len(CAT) - 1:,} bytes limit for one file."),
        Entry("small.png", PNG, ""),
    ]


def test_a_high_ratio_is_refused_only_above_the_floor() -> None:
    data = make_zip({"blank.bin": bytes(60_000), "zeros.bin": bytes(MiB)})
    blank, zeros = read(data)
    assert (blank.data, blank.refused) == (bytes(60_000), "")  # small: harmless
    assert zeros.data is None and "times its packed size" in zeros.refused
    assert read(data, max_ratio=10_000)[1].data == bytes(MiB)


@pytest.mark.parametrize(
    "name",
    [
        "../evil.jpg",
        "photos/../../evil.jpg",
        "/abs.jpg",
        "C:\\x.jpg",
        "c:x.jpg",
        "a\\..\\b.jpg",
        "..",
        "dir\\file.jpg",
    ],
)
def test_an_unsafe_name_is_listed_as_refused_and_not_read(name: str) -> None:
    data = make_zip({name: CAT, "fine.png": PNG})
    assert read(data) == [Entry(name, None, REFUSED_UNSAFE_NAME), Entry("fine.png", PNG, "")]


def test_a_name_with_a_nul_byte_is_unsafe() -> None:
    data = bytearray(make_zip({"evil.jpgXpng": PNG}))
    for offsets in headers(bytes(data)):
        for at in offsets:
            name_at = at + (30 if data[at + 2 : at + 4] == b"\x03\x04" else 46)
            data[name_at + 8] = 0
    (entry,) = read(bytes(data))
    assert (entry.name, entry.refused) == ("evil.jpg\ufffdpng", REFUSED_UNSAFE_NAME)


@pytest.mark.parametrize("inner_name", ["inner.zip", "photo.jpg"])  # judged by content
def test_a_zip_inside_the_zip_is_not_opened(inner_name: str) -> None:
    inner = make_zip({"cat.jpg": CAT})
    (entry,) = read(make_zip({inner_name: inner}))
    assert (entry.name, entry.data, entry.refused) == (inner_name, None, REFUSED_NESTED)


def test_an_encrypted_entry_is_refused_and_the_rest_read() -> None:
    data = bytearray(make_zip({"secret.jpg": CAT, "open.png": PNG}))
    (local, _), (central, _) = headers(bytes(data))
    data[local + 6] |= 1  # the "encrypted" bit of the general purpose flags
    data[central + 8] |= 1
    assert read(bytes(data)) == [
        Entry("secret.jpg", None, REFUSED_ENCRYPTED),
        Entry("open.png", PNG, ""),
    ]


def test_an_entry_compressed_with_bzip2_is_refused() -> None:
    (entry,) = read(make_zip({"cat.jpg": CAT}, zipfile.ZIP_BZIP2))
    assert (entry.data, entry.refused) == (None, REFUSED_METHOD)


def test_a_symbolic_link_is_refused() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        link = zipfile.ZipInfo("passwd.jpg")
        link.external_attr = 0o120777 << 16
        archive.writestr(link, "/etc/passwd")
    (entry,) = read(buf.getvalue())
    assert (entry.data, entry.refused) == (None, REFUSED_LINK)


def test_an_entry_whose_data_is_damaged_is_refused_and_the_rest_read() -> None:
    data = bytearray(make_zip({"cat.jpg": CAT, "tiny.png": PNG}, zipfile.ZIP_STORED))
    at = data.find(CAT[1000:1010])
    data[at] ^= 0xFF  # the CRC no longer matches
    assert read(bytes(data)) == [
        Entry("cat.jpg", None, REFUSED_DAMAGED),
        Entry("tiny.png", PNG, ""),
    ]


def test_a_local_header_that_disagrees_with_the_directory_is_damaged() -> None:
    data = bytearray(make_zip({"cat.jpg": CAT}))
    (local,), _ = headers(bytes(data))
    data[local + 30 : local + 33] = b"dog"
    (entry,) = read(bytes(data))
    assert (entry.name, entry.refused) == ("cat.jpg", REFUSED_DAMAGED)


# --- nothing reaches the disk ---------------------------------------------------------------------


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_reading_hostile_archives_creates_no_file_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bomb: bytes
) -> None:
    work = tmp_path / "deep" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    before_tmp, before_root = listing(tmp_path), set(os.listdir("/"))
    hostile = [
        make_zip(dict.fromkeys(["../evil.jpg", "/abs.jpg", "C:\\x.jpg", "a\\..\\b.jpg"], CAT)),
        make_zip({"../../outside.zip": make_zip({"../x.jpg": CAT})}),
        patched_sizes(bomb, 1000),
        bomb,
    ]
    for data in hostile:
        list(read_archive(io.BytesIO(data), **LIMITS))
    assert listing(tmp_path) == before_tmp
    assert set(os.listdir("/")) == before_root
    assert not Path("/abs.jpg").exists() and not (tmp_path / "deep" / "evil.jpg").exists()
