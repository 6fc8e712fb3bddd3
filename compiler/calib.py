"""Calibration and input data: .npy / .npz arrays in the model's NCHW layout, or a folder of images.

Image preprocessing (documented in the README): each image is converted to RGB (or grey for a
1-channel model), resized to the model's H x W with bilinear filtering, scaled to [0, 1] and
normalised per channel as (v - mean) / std. The defaults mean = std = 0.5 give p / 127.5 - 1,
the [-1, 1] range of the shared ImageNet models.
"""
from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np

from .errors import TinycError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def load_array(path: str, key: str = "x") -> np.ndarray:
    """Read a .npy, or array `key` of a .npz (or its only array)."""
    p = Path(path)
    if not p.is_file():
        raise TinycError(f"{path}: no such file")
    try:
        data = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise TinycError(f"{path}: not a readable .npy/.npz file ({e})") from e
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            names = list(data.keys())
            if key in names:
                name = key
            elif len(names) == 1:
                name = names[0]
            else:
                raise TinycError(f"{path}: holds arrays {names}; name the inputs '{key}'")
            try:
                arr = data[name]
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
                raise TinycError(f"{path}: array '{name}' is corrupt ({e})") from e
    else:
        arr = data
    if arr.dtype.kind not in "fiu":
        raise TinycError(f"{path}: array of dtype {arr.dtype}; expected numbers")
    return arr


def load_images(folder: str, shape_nchw, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                limit: int = 100) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    _, c, h, w = shape_nchw
    if c not in (1, 3):
        raise TinycError(f"image calibration needs a 1- or 3-channel model input (got {c})")
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise TinycError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    mean, std = (_per_channel(option, values, c)
                 for option, values in (("--calib-mean", mean), ("--calib-std", std)))
    if np.any(std <= 0):
        raise TinycError("--calib-std values must be positive")
    if limit < 1:
        raise TinycError(f"--calib-limit {limit}: give at least 1")
    out = []
    for f in files[:limit]:
        try:
            with warnings.catch_warnings():
                # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that: both refused
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(f) as im:
                    im = im.convert("RGB" if c == 3 else "L").resize((w, h), Image.BILINEAR)
                    a = np.asarray(im, np.float32) / 255.0
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise TinycError(f"{f}: refused as a decompression bomb ({e}); resize it below "
                             f"{Image.MAX_IMAGE_PIXELS:,} pixels") from e
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise TinycError(f"{f}: not a readable image ({type(e).__name__}: {e})") from e
        a = a.reshape(h, w, c).transpose(2, 0, 1)
        out.append((a - mean) / std)
    return np.stack(out).astype(np.float32)


def _per_channel(option: str, values, c: int) -> np.ndarray:
    """One value per channel, or one value for every channel."""
    values = np.asarray(values, np.float32).reshape(-1)
    if values.size not in (1, c):
        raise TinycError(f"{option} {','.join(f'{v:g}' for v in values)}: the model input has "
                         f"{c} channels; give {c} values or one for all")
    return np.broadcast_to(values, (c,)).reshape(c, 1, 1)


def load_calibration(path: str, shape_nchw, mean, std, limit: int,
                     layout: str | None = None) -> np.ndarray:
    """Calibration inputs in the model's layout (shape_nchw: the model input's shape)."""
    if limit < 1:
        raise TinycError(f"--calib-limit {limit}: give at least 1")
    if Path(path).is_dir():
        if len(shape_nchw) != 4:
            raise TinycError(f"{path}: a folder of images calibrates image models; this one "
                             f"takes {list(shape_nchw)}: give a .npy/.npz of inputs")
        if layout == "nhwc":   # images load as N,C,H,W
            n, h, w, c = shape_nchw
            return np.ascontiguousarray(np.moveaxis(
                load_images(path, (n, c, h, w), mean, std, limit), 1, -1))
        return load_images(path, shape_nchw, mean, std, limit)
    x = load_array(path)
    if x.dtype.kind != "f":
        # integer data would be taken as float values (e.g. pixels 0..255 where the model
        # expects its normalised input): the input scale and every range would be wrong
        raise TinycError(f"{path}: calibration data of dtype {x.dtype}; give float inputs as "
                         "the model expects them (e.g. pixels already normalised), or a folder "
                         "of images")
    if x.ndim == len(shape_nchw) and len(x) == 0 or x.size == 0:
        raise TinycError(f"{path}: holds no sample (shape {x.shape})")
    x = x.astype(np.float32)
    return x[:limit] if x.ndim == len(shape_nchw) else x
