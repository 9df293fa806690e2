"""pySTEPS' dense Lucas-Kanade motion with its default settings, without importing pySTEPS.

``pysteps.motion.lucaskanade.dense_lucaskanade`` (pySTEPS 1.x defaults) computed step for step:
morphological opening of each frame (3-pixel ellipse), Shi-Tomasi corners (OpenCV
``goodFeaturesToTrack``: 1000 corners, quality 0.01, 10 px apart, block 5), pyramidal Lucas-Kanade
tracking to the next frame (``calcOpticalFlowPyrLK``: 50 x 50 window, 3 levels, criteria (3, 10, 0),
min. eigenvalue 1e-4), removal of the vectors more than 3 Mahalanobis distances from their 30
nearest neighbours, declustering on a 20-pixel grid (medians), and inverse-distance weighting of the
20 nearest vectors (power 0.5, offset 0.5 px) onto every pixel.

Why a port: ``import pysteps`` costs about 3 s (its package imports ``pysteps.blending``, SciPy's
statistics, matplotlib and pandas), more than the whole motion estimate, and its IDW spends about
1.5 s of a 512 x 512 field in numpy temporaries. Here the nearest vectors come from one KD-tree
query and the weights from a few in-place operations: the same field (to ~1e-14 px per step) in
0.4-1 s instead of 2-10 s on this project's 2-core test machine (docs/performance.md).
``tests/test_lucaskanade.py`` holds it to pySTEPS on real radar frames. Each frame is opened once
(pySTEPS opens the middle ones twice, as the end of one pair and the start of the next).

Ported from pySTEPS (https://github.com/pySTEPS/pysteps), BSD 3-Clause License,
Copyright (c) 2019, PySteps developers; the licence text is in ``nowcast/LICENSES/pysteps.txt``.
"""

from __future__ import annotations

import numpy as np

_IDW_NEIGHBOURS, _IDW_POWER, _IDW_OFFSET = 20, 0.5, 0.5
_CHUNK = 1 << 18
"""Pixels per KD-tree query (bounds the (chunk, 20) temporaries to a few tens of MB)."""


def _cv2():  # noqa: ANN202 - the cv2 module
    import cv2

    return cv2


def _to_uint8(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """pySTEPS' scaling of an image to 0-255 bytes between ``lo`` and ``hi`` (truncated, as numpy casts)."""
    if hi - lo > 1e-8:
        scaled = (img - lo) / (hi - lo) * 255
    else:
        scaled = img - lo
    return np.ndarray.astype(scaled, "uint8")


def morph_opening(img: np.ndarray, size: int = 3) -> np.ndarray:
    """Isolated wet specks (removed by a morphological opening of the wet mask) set to the image's minimum.

    img: (H, W) finite dBR. Returns a new array.
    """
    cv2 = _cv2()
    out = img.copy()
    lowest = out.min()
    wet = np.ndarray.astype(out > lowest, "uint8")
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    out[(wet - cv2.morphologyEx(wet, cv2.MORPH_OPEN, kernel)) > 0] = lowest
    return out


def shitomasi(img: np.ndarray) -> np.ndarray:
    """Shi-Tomasi corners of a finite (H, W) image as pySTEPS finds them, (N, 2) float32 (x, y).

    pySTEPS masks the image with ``image[mask] = masked`` where ``mask`` is a uint8 array of zeros
    (no invalid pixels): integer indexing, which masks the first row. Its scaling then ignores that
    row and fills it with the whole image's minimum; reproduced here, so the corners are the same.
    """
    cv2 = _cv2()
    rest = img[1:]
    scaled = img.copy()
    scaled[0] = img.min()
    image = _to_uint8(scaled, rest.min(), rest.max())
    mask = np.ones(img.shape, np.uint8)
    points = cv2.goodFeaturesToTrack(
        image,
        mask=mask,
        maxCorners=1000,
        qualityLevel=0.01,
        minDistance=10,
        blockSize=5,
        useHarrisDetector=False,
        k=0.04,
    )
    return np.empty((0, 2), np.float32) if points is None else points[:, 0, :].astype(np.float32)


def track(prev: np.ndarray, nxt: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pyramidal Lucas-Kanade tracking of ``points`` (N, 2) from ``prev`` to ``nxt`` (finite (H, W)).

    Returns the positions (M, 2) and displacements (M, 2), pixels, of the points tracked.
    """
    cv2 = _cv2()
    a = _to_uint8(prev, prev.min(), prev.max())
    b = _to_uint8(nxt, nxt.min(), nxt.max())
    p1, status, _ = cv2.calcOpticalFlowPyrLK(
        a, b, points, None, winSize=(50, 50), maxLevel=3, criteria=(3, 10, 0), flags=0, minEigThreshold=1e-4
    )
    ok = np.atleast_1d(status.squeeze()) == 1
    if not np.any(ok):
        return np.empty((0, 2)), np.empty((0, 2))
    return points[ok], p1[ok] - points[ok]


def outliers(uv: np.ndarray, xy: np.ndarray, threshold: float = 3.0, k: int = 30) -> np.ndarray:
    """(N,) bool: vectors more than ``threshold`` Mahalanobis distances from their ``k`` nearest neighbours'.

    pySTEPS' ``detect_outliers`` with coordinates: the covariance of each point's neighbours (the
    KD-tree's nearest ``k + 1`` but the first), inverted per point; a singular one counts as no outlier.
    """
    from scipy.spatial import cKDTree

    n = uv.shape[0]
    if n < 2:
        return np.zeros(n, dtype=bool)
    _, inds = cKDTree(xy).query(xy, k=min(n, k + 1))
    neighbours = uv[inds[:, 1:]]  # (N, K, 2)
    mean = neighbours.mean(axis=1)  # (N, 2)
    centred = neighbours - mean[:, None]
    cov = np.einsum("nki,nkj->nij", centred, centred) / (neighbours.shape[1] - 1)  # np.cov, ddof 1
    offset = uv - mean
    distance = np.zeros(n)
    try:
        inverse = np.linalg.inv(cov)
        distance = np.sqrt(np.einsum("ni,nij,nj->n", offset, inverse, offset))
    except np.linalg.LinAlgError:  # one singular covariance: pySTEPS goes point by point
        for i in range(n):
            try:
                distance[i] = np.sqrt(offset[i] @ np.linalg.inv(cov[i]) @ offset[i])
            except np.linalg.LinAlgError:
                distance[i] = 0.0
    return distance > threshold


def decluster(xy: np.ndarray, uv: np.ndarray, scale: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """Median position and vector of the points in each ``scale``-pixel cell, cells in lexicographic order."""
    cells, which = np.unique(np.floor(xy / scale), axis=0, return_inverse=True)
    which = which.reshape(-1)
    order = np.argsort(which, kind="stable")
    bounds = np.searchsorted(which[order], np.arange(len(cells) + 1))
    groups = [order[bounds[i] : bounds[i + 1]] for i in range(len(cells))]
    return (
        np.array([np.median(xy[g], axis=0) for g in groups]).reshape(-1, 2),
        np.array([np.median(uv[g], axis=0) for g in groups]).reshape(-1, 2),
    )


def idw(xy: np.ndarray, uv: np.ndarray, shape: tuple[int, int], workers: int = 1) -> np.ndarray:
    """Inverse-distance weighting of vectors ``uv`` (N, 2) at ``xy`` (N, 2) onto every pixel, (2, H, W).

    Each pixel takes the 20 nearest vectors with weights (distance + 0.5 px) ** -0.5, normalised.
    As pySTEPS: one vector, or all vectors equal (both components), gives that value everywhere.
    """
    from scipy.spatial import cKDTree

    h, w = shape
    if xy.shape[0] == 1:
        return np.broadcast_to(uv[0][:, None, None], (2, h, w)).astype(np.float64)
    if uv.max() == uv.min():
        return np.full((2, h, w), uv.ravel()[0], dtype=np.float64)
    k = min(_IDW_NEIGHBOURS, xy.shape[0])
    tree = cKDTree(xy)
    ys, xs = np.divmod(np.arange(h * w), w)
    out = np.empty((2, h * w))
    for start in range(0, h * w, _CHUNK):
        sl = slice(start, min(start + _CHUNK, h * w))
        dist, inds = tree.query(np.column_stack((xs[sl], ys[sl])).astype(np.float64), k=k, workers=workers)
        dist += _IDW_OFFSET
        weights = np.reciprocal(np.power(dist, _IDW_POWER, out=dist), out=dist)  # as pySTEPS, in place
        weights /= weights.sum(axis=1, keepdims=True)
        for c in range(2):
            out[c, sl] = np.einsum("nk,nk->n", weights, uv[inds, c])
    return out.reshape(2, h, w)


def dense_lucaskanade(frames: np.ndarray, workers: int | None = None) -> np.ndarray:
    """Motion of finite dBR frames (T >= 2, H, W), oldest first: (2, H, W) float64 pixels per step.

    Component 0 along x (columns), 1 along y (rows), as pySTEPS. No tracked feature: zero motion.
    ``workers``: threads of the KD-tree queries (default: the CPUs this process may use).
    """
    x = np.asarray(frames, dtype=np.float64)
    if x.ndim != 3 or x.shape[0] < 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"frames: expected finite (T >= 2, H, W) dBR, found shape {x.shape}")
    if workers is None:
        from nowcast.runtime import available_cores

        workers = available_cores()
    xy, uv = np.empty((0, 2)), np.empty((0, 2))
    opened = [morph_opening(frame) for frame in x]
    for prev, nxt in zip(opened[:-1], opened[1:]):
        points = shitomasi(prev)
        if points.shape[0] == 0:
            continue
        xy_, uv_ = track(prev, nxt, points)
        xy, uv = np.append(xy, xy_, axis=0), np.append(uv, uv_, axis=0)
    if xy.shape[0] == 0:
        return np.zeros((2, *x.shape[1:]))
    keep = ~outliers(uv, xy)
    xy, uv = decluster(xy[keep], uv[keep])
    if xy.shape[0] == 0:
        return np.zeros((2, *x.shape[1:]))
    return idw(xy, uv, x.shape[1:], workers=workers)
