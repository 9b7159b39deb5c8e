#!/usr/bin/env python3
"""Writes tests/data/golden_resize.bin: PIL's output for torchvision-style Resize + CenterCrop.

tests/io/test_image.cpp regenerates the same synthetic source images from the formula below and
checks brecq's resize_shorter / center_crop against these bytes (within 1/255).

Run with Debian's python (python3-pil):  /usr/bin/python3 tools/golden_resize.py
torchvision is not needed: its two rules are reproduced here verbatim (see resize_shorter and
center_crop), so the file depends on PIL only.

Format (little-endian): b"BRQRSZ1\\n", u32 case count, then per case six u16
(src_h, src_w, resize_shorter, crop, out_h, out_w) followed by out_h * out_w * 3 RGB bytes.
"""
import struct
import sys
from pathlib import Path

from PIL import Image

# (source height, source width, resize_shorter (0 = none), center crop (0 = none))
CASES = [
    (23, 37, 12, 0),   # landscape downscale, whole image (edges included)
    (23, 37, 11, 8),   # downscale then crop: offsets 4.5 -> 4 and 1.5 -> 2 (round half even)
    (37, 23, 11, 10),  # portrait: offsets 3.5 -> 4 and 0.5 -> 0
    (23, 37, 30, 12),  # upscale (no antialiasing)
    (8, 13, 0, 11),    # crop taller than the image: zero padding (1 row top, 2 bottom)
]


def pixel(y, x, c):
    """The synthetic image: smooth ramps plus a high-frequency pattern (same formula in C++)."""
    return (x * x * 3 + y * 17 + c * 85 + x * y + ((x ^ y) & 3) * 40) & 255


def make_image(h, w):
    data = bytes(pixel(y, x, c) for y in range(h) for x in range(w) for c in range(3))
    return Image.frombytes("RGB", (w, h), data)


def resize_shorter(img, size):
    # torchvision.transforms.functional.resize with an int size (_compute_resized_output_size).
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return img.resize((new_w, new_h), Image.BILINEAR)


def center_crop(img, crop):
    # torchvision.transforms.functional.center_crop on a PIL image.
    w, h = img.size
    if crop > w or crop > h:
        left = (crop - w) // 2 if crop > w else 0
        top = (crop - h) // 2 if crop > h else 0
        padded = Image.new("RGB", (max(w, crop), max(h, crop)), (0, 0, 0))
        padded.paste(img, (left, top))
        img = padded
        w, h = img.size
        if w == crop and h == crop:
            return img
    top = int(round((h - crop) / 2.0))
    left = int(round((w - crop) / 2.0))
    return img.crop((left, top, left + crop, top + crop))


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent.parent / "tests/data/golden_resize.bin"
    blob = bytearray(b"BRQRSZ1\n") + struct.pack("<I", len(CASES))
    for h, w, size, crop in CASES:
        img = make_image(h, w)
        if size:
            img = resize_shorter(img, size)
        if crop:
            img = center_crop(img, crop)
        ow, oh = img.size
        blob += struct.pack("<6H", h, w, size, crop, oh, ow) + img.tobytes()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(bytes(blob))
    print(f"wrote {out} ({len(blob)} bytes, {len(CASES)} cases)")


if __name__ == "__main__":
    main()
