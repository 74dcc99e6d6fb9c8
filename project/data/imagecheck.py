"""One image file, as the data check sees it (project.data.datacheck walks many): what it really is
(sniffed, not trusted to its name), whether TensorFlow decodes it faithfully, and its RGB copy when not."""

import hashlib
import io
from pathlib import Path

import numpy as np

from project.artifacts import atomic_write
from project.errors import UserError

AS_IS = {("JPEG", "L"), ("JPEG", "RGB"), ("PNG", "L"), ("PNG", "RGB")}  # decoded faithfully by TensorFlow
READABLE = {"JPEG", "MPO", "PNG", "BMP", "GIF", "WEBP"}  # converted when not AS_IS; other formats excluded
LARGE_PIXELS = 40_000_000  # above this, converted copies are downscaled on decode
MAX_SIDE = 2048  # longest side of a downscaled copy
TINY_SIDE = 8  # smaller images are kept (resized) with a warning
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif"}


def sniff(data):
    """(reason, detail) for bytes Pillow cannot identify."""
    if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:
        return "unsupported_format", f"{data[8:12].decode().upper()} (HEIF) image: convert it to JPEG or PNG"
    head = data[:1024]
    if b"<html" in head.lower() or head.lstrip().lower().startswith((b"<!doctype", b"<?xml", b"<svg")):
        return "not_an_image", "an HTML/XML page saved with an image extension (a failed download?)"
    try:
        head.decode("utf-8")
        text = b"\x00" not in head
    except UnicodeDecodeError as error:
        text = error.start >= len(head) - 3 and b"\x00" not in head  # a character cut at the end
    if text:
        return "not_an_image", "a text file saved with an image extension"
    return "corrupt", "not a readable image (damaged, or a format Pillow does not know)"


def conversions(image):
    """Why the pipeline cannot decode this image as it is (empty: it can)."""
    changes = []
    alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if (image.format, image.mode) not in AS_IS or alpha:
        changes.append(f"{image.format} {image.mode} -> 8-bit RGB" + (" (transparent areas on white)" if alpha else ""))
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # damaged EXIF: the pixels may still be fine
        orientation = 1
    if orientation not in (None, 1):
        changes.append(f"EXIF orientation {orientation} applied")
    if image.width * image.height > LARGE_PIXELS:
        changes.append(f"{image.width}x{image.height} downscaled on decode to at most {MAX_SIDE} px")
    return changes


def to_rgb(image):
    """8-bit RGB, upright, at most MAX_SIDE when the original is very large."""
    from PIL import Image, ImageOps

    large = image.width * image.height > LARGE_PIXELS
    if large:
        image.draft(None, (MAX_SIDE, MAX_SIDE))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
    image.load()
    image = ImageOps.exif_transpose(image)
    if large:
        image.thumbnail((MAX_SIDE, MAX_SIDE))
    if image.mode.startswith("I") or image.mode == "F":  # 16- or 32-bit grey
        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16") or values.max() > 255:
            values = values / 257.0
        image = Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def inspect(path, converted_dir):
    """Read one file: its status (kept / converted / excluded), reason, detail, format and hash.
    A converted copy is written to `converted_dir` on the way."""
    from PIL import Image, UnidentifiedImageError

    data = Path(path).read_bytes()
    row = {
        "hash": hashlib.blake2b(data, digest_size=16).hexdigest(),
        "format": "",
        "mode": "",
        "width": 0,
        "height": 0,
        "status": "kept",
        "reason": "",
        "detail": "",
    }
    if not data:
        return {**row, "status": "excluded", "reason": "empty_file", "detail": "zero bytes"}
    try:
        with Image.open(io.BytesIO(data)) as image:
            row.update(format=image.format, mode=image.mode, width=image.width, height=image.height)
            if image.format not in READABLE:
                return {
                    **row,
                    "status": "excluded",
                    "reason": "unsupported_format",
                    "detail": f"{image.format} image: convert it to PNG or JPEG",
                }
            changes = conversions(image)
            if changes:
                target = Path(converted_dir) / f"{row['hash']}.png"
                if not target.exists():
                    atomic_write(target, png_bytes(to_rgb(image)))
                return {**row, "status": "converted", "reason": "converted", "detail": "; ".join(changes)}
            if image.format == "JPEG":  # the whole stream is still read at 1/8 scale: truncation shows
                image.draft(None, (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except UserError:
        raise
    except Image.DecompressionBombError as error:
        return {**row, "status": "excluded", "reason": "too_large", "detail": str(error)}
    except UnidentifiedImageError:
        reason, detail = sniff(data)
        return {**row, "status": "excluded", "reason": reason, "detail": detail}
    except Exception as error:  # truncated or damaged data: Pillow raises OSError, SyntaxError, ValueError...
        return {**row, "status": "excluded", "reason": "corrupt", "detail": f"{type(error).__name__}: {error}"[:200]}
    return row
