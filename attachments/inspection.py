"""What a file really is: magic-byte sniffing, image decoding under a pixel limit, a scan of PDFs
for active content, and the admin thumbnail. Pure functions over a local file; no database."""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import puremagic
from PIL import Image, UnidentifiedImageError

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


def inspect_file(path: Path, *, declared_type: str, max_pixels: int, thumbnail_size: int) -> Verdict:
    with path.open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
    sniffed = sniff(head)
    if sniffed not in ALLOWED_TYPES:
        what = sniffed or "unrecognised content"
        return Verdict(sniffed, "type_not_allowed", f"The file is {what}; allowed: {', '.join(sorted(ALLOWED_TYPES))}.")
    if declared_type and not same_type(declared_type, sniffed):
        return Verdict(sniffed, "type_mismatch", f"Declared {declared_type}, but the bytes are {sniffed}.")
    if sniffed == "application/pdf":
        found = pdf_active_content(path)
        if found:
            return Verdict(sniffed, "pdf_active_content", f"The PDF carries active content: {', '.join(found)}.")
        return Verdict(sniffed)
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
_ACTIVE_NAMES = {b"JavaScript", b"JS", b"OpenAction", b"Launch", b"EmbeddedFile", b"EmbeddedFiles"}
_PDF_NAME = re.compile(rb"/([^\s/<>\[\]()%{}]{1,64})")
_HEX_ESCAPE = re.compile(rb"#([0-9A-Fa-f]{2})")


def pdf_active_content(path: Path, *, chunk_size: int = 1 << 20) -> list[str]:
    """The active-content names found in the PDF's bytes, streamed in chunks with an overlap.

    A scan of the raw bytes: names inside compressed object streams are not seen (documented in
    docs/attachments.md); the common attack PDFs put them in plain objects."""
    found: set[str] = set()
    tail = b""
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_size):
            window = tail + chunk
            for match in _PDF_NAME.finditer(window):
                name = _HEX_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), match.group(1))
                if name in _ACTIVE_NAMES:
                    found.add(name.decode())
            tail = window[-80:]
    return sorted(found)
