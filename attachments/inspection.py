"""What a file really is: magic-byte sniffing, image decoding under a pixel limit, a scan of PDFs
for active content (raw bytes, then the parsed objects), and the admin thumbnail. Pure functions
over a local file; no database."""

from __future__ import annotations

import io
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import puremagic
from celery.exceptions import SoftTimeLimitExceeded
from PIL import Image, UnidentifiedImageError
from pypdf import PdfReader, apply_configuration, get_configuration
from pypdf.errors import LimitReachedError
from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject, NameObject, NullObject

ALLOWED_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/heic", "image/heif", "application/pdf"})

# Spellings clients use for the same type. HEIC is HEVC-coded HEIF: phones say either.
_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "image/heic-sequence": "image/heic",
    "image/heif-sequence": "image/heif",
    "application/x-pdf": "application/pdf",
}
_FAMILY = {"image/heif": "image/heic"}

# ISO-BMFF brands of HEIF files; puremagic's table knows only some of them.
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1", b"avif"}
_HEIF_ONLY = _HEIF_BRANDS - {b"avif"}

SNIFF_BYTES = 8192


def normalise_type(content_type: str) -> str:
    base = content_type.split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base)


def same_type(declared: str, sniffed: str) -> bool:
    a, b = normalise_type(declared), normalise_type(sniffed)
    return _FAMILY.get(a, a) == _FAMILY.get(b, b)


def sniff(head: bytes) -> str:
    """The MIME type the leading bytes say, or "" when nothing on the allow-list matches."""
    if len(head) >= 12 and head[4:8] == b"ftyp" and head[8:12] in _HEIF_ONLY:
        return "image/heic"
    try:
        matches = puremagic.magic_string(head)
    except puremagic.PureError:
        return ""
    for match in matches:
        mime = normalise_type(match.mime_type)
        if mime in ALLOWED_TYPES:
            return mime
    return normalise_type(matches[0].mime_type) if matches else ""


@dataclass(frozen=True)
class Verdict:
    sniffed_type: str
    reason: str = ""  # empty: the file is acceptable
    detail: str = ""
    thumbnail: bytes = b""

    @property
    def ok(self) -> bool:
        return not self.reason


def inspect_file(
    path: Path, *, declared_type: str, max_pixels: int, thumbnail_size: int, pdf_limits: PdfLimits
) -> Verdict:
    with path.open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
    sniffed = sniff(head)
    if sniffed not in ALLOWED_TYPES:
        what = sniffed or "unrecognised content"
        return Verdict(sniffed, "type_not_allowed", f"The file is {what}; allowed: {', '.join(sorted(ALLOWED_TYPES))}.")
    if declared_type and not same_type(declared_type, sniffed):
        return Verdict(sniffed, "type_mismatch", f"Declared {declared_type}, but the bytes are {sniffed}.")
    if sniffed == "application/pdf":
        return _check_pdf(path, sniffed, limits=pdf_limits)
    if sniffed == "image/heic":
        # Pillow cannot decode HEIF without a plugin; the type was sniffed from the container.
        return Verdict(sniffed)
    return _check_image(path, sniffed, max_pixels=max_pixels, thumbnail_size=thumbnail_size)


_PIL_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}


def _check_image(path: Path, sniffed: str, *, max_pixels: int, thumbnail_size: int) -> Verdict:
    try:
        with warnings.catch_warnings():
            # Over MAX_IMAGE_PIXELS Pillow only warns (and raises at twice that); we decide below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=[_PIL_FORMATS[sniffed]]) as image:
                width, height = image.size
                # Checked from the header, before a single pixel is decoded: a 1 kB PNG can
                # claim 100k x 100k pixels and inflate to tens of gigabytes.
                if width * height > max_pixels:
                    return Verdict(
                        sniffed,
                        "image_too_large",
                        f"{width}x{height} pixels is over the limit of {max_pixels} pixels.",
                    )
                image.load()
                thumb = image.copy()
    except Image.DecompressionBombError as exc:
        return Verdict(sniffed, "image_too_large", str(exc)[:500])
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return Verdict(sniffed, "image_undecodable", f"The image does not decode: {exc}"[:500])
    thumb.thumbnail((thumbnail_size, thumbnail_size))
    if thumb.mode not in ("RGB", "L"):
        thumb = thumb.convert("RGB")
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=80)
    return Verdict(sniffed, thumbnail=out.getvalue())


# PDF name objects that run code or carry files. Names may hide letters as #xx escapes.
_ACTIVE_NAMES = frozenset({"JavaScript", "JS", "OpenAction", "Launch", "EmbeddedFile", "EmbeddedFiles"})
# Names only a file with compressed objects carries: an object stream, a cross-reference stream
# (the only place that can point into one) and a hybrid file's pointer to such a stream.
_COMPRESSION_NAMES = frozenset({"ObjStm", "XRef", "XRefStm"})
_WATCHED_NAMES = {name.encode(): name for name in _ACTIVE_NAMES | _COMPRESSION_NAMES}
_PDF_NAME = re.compile(rb"/([^\s/<>\[\]()%{}]{1,64})")
_HEX_ESCAPE = re.compile(rb"#([0-9A-Fa-f]{2})")
# A row of a cross-reference table ("0000012345 00000 n"). pypdf indexes every row, and every
# "12 0 obj" when it rebuilds a broken table, in memory before any of our caps can look.
_XREF_ROW = re.compile(rb" \d{5} [nf][\r\n ]")


@dataclass(frozen=True)
class RawPdfScan:
    names: frozenset[str]  # the watched names found
    objects: int  # object headers and cross-reference table rows: what pypdf would index


def pdf_raw_scan(path: Path, *, count_objects: bool = False, chunk_size: int = 1 << 20) -> RawPdfScan:
    """The watched names (active content, compressed-object markers) in the PDF's raw bytes,
    streamed in chunks with an overlap. Works on any bytes, however broken the file; it sees
    every name outside compressed streams, so without compressed objects it sees them all.
    `count_objects`: also count object headers and cross-reference rows (else `objects` is 0)."""
    found: set[str] = set()
    objects = 0
    tail = b""
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_size):
            window = tail + chunk
            for match in _PDF_NAME.finditer(window):
                name = _HEX_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), match.group(1))
                if name in _WATCHED_NAMES:
                    found.add(_WATCHED_NAMES[name])
            if count_objects:  # the few split by a chunk boundary are missed
                objects += chunk.count(b"obj") - chunk.count(b"endobj") + len(_XREF_ROW.findall(chunk))
            tail = window[-80:]
    return RawPdfScan(frozenset(found), objects)


def pdf_active_content(path: Path, *, chunk_size: int = 1 << 20) -> list[str]:
    """The active-content names in the PDF's raw bytes (not inside compressed object streams:
    `pdf_object_active_content` looks there)."""
    return sorted(pdf_raw_scan(path, chunk_size=chunk_size).names & _ACTIVE_NAMES)


@dataclass(frozen=True)
class PdfLimits:
    """Bounds on the structural scan (settings ATTACHMENT_PDF_*)."""

    max_bytes: int  # larger files are not parsed at all (pypdf holds the file in memory)
    max_objects: int  # cross-reference entries, plain and compressed
    max_stream_bytes: int  # decoded size of one stream (decompression bombs)
    max_seconds: float


class PdfTooComplex(Exception):
    """The PDF is over one of the `PdfLimits`."""


class PdfUnreadable(Exception):
    """pypdf could not parse the PDF. `compressed`: it had got far enough to see compressed
    objects in the cross-reference."""

    def __init__(self, message: str, *, compressed: bool) -> None:
        super().__init__(message)
        self.compressed = compressed


def pdf_object_active_content(path: Path, *, limits: PdfLimits) -> list[str]:
    """The active-content names among the PDF's objects as pypdf parses them, including the
    objects inside compressed object streams that the raw scan cannot see: dictionary keys and
    name values at any depth (strings and page content streams are not read).

    Raises PdfTooComplex past `limits` (pypdf's own LimitReachedError included) and
    PdfUnreadable when pypdf cannot parse the file."""
    deadline = time.monotonic() + limits.max_seconds
    # pypdf checks these while it decodes a stream: an object stream that inflates past the
    # cap fails before it is in memory.
    caps = {
        name: limits.max_stream_bytes
        for name in (
            "zlib_maximum_output_length",
            "lzw_maximum_output_length",
            "run_length_maximum_output_length",
            "brotli_maximum_output_length",
            "array_based_stream_maximum_output_length",
            "jbig2_maximum_output_length",
        )
    }
    caps["stream_decoding_work_maximum_length"] = 4 * limits.max_stream_bytes
    found: set[str] = set()
    reader: PdfReader | None = None
    try:
        with apply_configuration(get_configuration().with_overwrites(**caps)):
            reader = PdfReader(io.BytesIO(path.read_bytes()), xref_stream_maximum_entries=limits.max_objects)
            compressed = reader.xref_objStm
            plain = [
                IndirectObject(number, generation, reader)
                for generation, table in reader.xref.items()
                if generation != 65535  # free entries
                for number in table
                if generation or number not in compressed
            ]
            if len(plain) + len(compressed) > limits.max_objects:
                raise PdfTooComplex(
                    f"{len(plain) + len(compressed)} objects is over the limit of {limits.max_objects}."
                )
            _collect_names(reader.trailer, found, deadline)
            for ref in plain:
                _collect_names(reader.get_object(ref), found, deadline)
                # Only one object's bytes in memory at a time.
                reader.resolved_objects.clear()
            by_stream: dict[int, list[int]] = {}
            for number, (stream_number, _index) in compressed.items():
                by_stream.setdefault(stream_number, []).append(number)
            for numbers in by_stream.values():
                # pypdf decodes the whole object stream once for the first of its objects.
                for number in numbers:
                    obj = reader.get_object(number)
                    if obj is None or isinstance(obj, NullObject):
                        # pypdf skips a stream it cannot decode (with a warning) where a viewer
                        # may well decode it: what it hides was not looked at.
                        raise PdfUnreadable(f"Compressed object {number} cannot be read.", compressed=True)
                    _collect_names(obj, found, deadline)
                reader.resolved_objects.clear()
    except (PdfTooComplex, PdfUnreadable):
        raise
    except LimitReachedError as exc:
        raise PdfTooComplex(str(exc)) from exc
    except (MemoryError, RecursionError) as exc:
        raise PdfTooComplex(f"{type(exc).__name__} while parsing the PDF.") from exc
    except SoftTimeLimitExceeded:
        raise
    except Exception as exc:
        if isinstance(exc.__cause__ or exc.__context__, LimitReachedError):
            # pypdf wraps some of its limits (the cross-reference's size) in a PdfReadError.
            raise PdfTooComplex(str(exc)) from exc
        # pypdf raises anything from PdfReadError to KeyError on broken input; every one of them
        # means the same thing here: no parsed structure to look at.
        saw_compressed = bool(reader is not None and reader.xref_objStm)
        raise PdfUnreadable(f"{type(exc).__name__}: {exc}"[:300], compressed=saw_compressed) from exc
    return sorted(found)


def _collect_names(obj: Any, found: set[str], deadline: float) -> None:
    """Add the active names among `obj`'s keys and name values, without following references
    (every indirect object is visited on its own)."""
    stack = [obj]
    steps = 0
    while stack:
        item = stack.pop()
        if isinstance(item, NameObject):
            if item[1:] in _ACTIVE_NAMES:
                found.add(item[1:])
        elif isinstance(item, DictionaryObject):  # stream dictionaries too
            for key, value in dict.items(item):  # dict's own: DictionaryObject's resolves references
                stack.append(key)
                stack.append(value)
        elif isinstance(item, ArrayObject):
            stack.extend(list.__iter__(item))
        steps += 1
        if steps % 4096 == 0 and time.monotonic() > deadline:
            raise PdfTooComplex("The PDF took too long to scan.")
    if time.monotonic() > deadline:
        raise PdfTooComplex("The PDF took too long to scan.")


def _check_pdf(path: Path, sniffed: str, *, limits: PdfLimits) -> Verdict:
    size = path.stat().st_size
    raw = pdf_raw_scan(path, count_objects=size <= limits.max_bytes)
    found = sorted(raw.names & _ACTIVE_NAMES)
    if found:
        return Verdict(sniffed, "pdf_active_content", f"The PDF carries active content: {', '.join(found)}.")
    compressed = bool(raw.names & _COMPRESSION_NAMES)
    if size > limits.max_bytes or raw.objects > limits.max_objects:
        # Too big for pypdf to hold and index. Without compressed objects the raw scan has seen
        # every name and decides; with them, what they hide cannot be looked at.
        if not compressed:
            return Verdict(sniffed)
        what = f"{size} bytes" if size > limits.max_bytes else f"about {raw.objects} objects"
        return Verdict(
            sniffed,
            "pdf_too_complex",
            f"The PDF has compressed objects and {what}, over the limits of {limits.max_bytes} bytes "
            f"and {limits.max_objects} objects.",
        )
    try:
        found = pdf_object_active_content(path, limits=limits)
    except PdfTooComplex as exc:
        return Verdict(sniffed, "pdf_too_complex", f"The PDF is too complex to scan: {exc}"[:500])
    except PdfUnreadable as exc:
        if compressed or exc.compressed:
            # Its compressed objects are hidden from the raw scan and could not be opened.
            return Verdict(sniffed, "pdf_unreadable", f"The PDF's compressed objects cannot be read: {exc}"[:500])
        # Without compressed objects, the raw scan saw every name there is: it decides, as it
        # did before the structural scan existed (odd but harmless files stay accepted).
        return Verdict(sniffed)
    if found:
        return Verdict(sniffed, "pdf_active_content", f"The PDF carries active content: {', '.join(found)}.")
    return Verdict(sniffed)
