"""Mask operations (pure numpy/OpenCV): exact examples, then properties over many random masks.

Property tests use numpy's generator with fixed seeds, so a failure is reproducible.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from editor.core import masks
from editor.core.errors import SelectionError

SIZES = [(1, 1), (7, 7), (1, 9), (9, 1), (33, 17), (333, 1000), (1000, 333)]


def random_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Blobs, specks, stripes, empty or full: the variety a selection can have."""
    kind = rng.integers(0, 6)
    if kind == 0:
        return np.zeros((height, width), np.uint8)
    if kind == 1:
        return np.full((height, width), 255, np.uint8)
    if kind == 2:  # specks
        density = rng.uniform(0.001, 0.3)
        return np.where(rng.random((height, width)) < density, 255, 0).astype(np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    mask = np.zeros((height, width), bool)
    for _ in range(rng.integers(1, 4)):  # discs
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        r = rng.uniform(0.5, max(1.0, max(height, width) / 3))
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if kind == 4:  # with holes
        mask &= rng.random((height, width)) > 0.05
    if kind == 5:  # a one-pixel stripe too
        mask[:, rng.integers(0, width)] = True
    return np.where(mask, 255, 0).astype(np.uint8)


def cases(seed: int, per_size: int = 4):
    rng = np.random.default_rng(seed)
    for height, width in SIZES:
        count = 2 if height * width > 100_000 else per_size
        for _ in range(count):
            yield random_mask(rng, height, width)
    for _ in range(per_size * 2):  # random sizes
        yield random_mask(rng, int(rng.integers(1, 60)), int(rng.integers(1, 60)))


def distance_to(mask: np.ndarray) -> np.ndarray:
    """Brute-force Euclidean distance from every pixel to the nearest selected one (small masks)."""
    ys, xs = np.nonzero(mask)
    height, width = mask.shape
    if ys.size == 0:
        return np.full(mask.shape, np.inf)
    yy, xx = np.mgrid[0:height, 0:width]
    d2 = (yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2
    return np.sqrt(d2.min(axis=-1))


def is_binary(mask: np.ndarray, shape: tuple[int, int]) -> bool:
    return mask.dtype == np.uint8 and mask.shape == shape and bool(np.isin(mask, (0, 255)).all())


def sel(mask: np.ndarray) -> np.ndarray:
    return mask > 0


# --- exact examples --------------------------------------------------------------------------


def test_single_pixel_grown_by_3_is_a_disc_of_radius_3() -> None:
    mask = np.zeros((15, 15), np.uint8)
    mask[7, 7] = 255
    grown = masks.grow(mask, 3)
    yy, xx = np.mgrid[0:15, 0:15]
    assert np.array_equal(sel(grown), (yy - 7) ** 2 + (xx - 7) ** 2 <= 9)
    assert int(sel(grown).sum()) == 29  # the lattice points of a radius-3 disc


def test_grow_at_the_border_is_clipped() -> None:
    mask = np.zeros((6, 6), np.uint8)
    mask[0, 0] = 255
    yy, xx = np.mgrid[0:6, 0:6]
    assert np.array_equal(sel(masks.grow(mask, 2)), yy**2 + xx**2 <= 4)


def test_shrink_a_square() -> None:
    mask = np.zeros((40, 40), np.uint8)
    mask[10:30, 10:30] = 255
    expected = np.zeros_like(mask)
    expected[13:27, 13:27] = 255
    assert np.array_equal(masks.shrink(mask, 3), expected)
    assert np.array_equal(masks.grow(mask, -3), expected)
    # Growing back gives rounded corners inside the original square.
    regrown = masks.grow(masks.shrink(mask, 3), 3)
    assert not (sel(regrown) & ~sel(mask)).any()
    assert sel(regrown)[10:30, 13:27].all() and sel(regrown)[13:27, 10:30].all()


def test_shrink_removes_thin_parts_and_grow_zero_is_identity() -> None:
    mask = np.zeros((9, 9), np.uint8)
    mask[4, :] = 255
    assert masks.is_empty(masks.shrink(mask, 1))
    assert np.array_equal(masks.grow(mask, 0), mask)
    assert np.array_equal(masks.shrink(mask, 0), mask)


def test_feather_ramps_down_linearly_and_stops_after_n_pixels() -> None:
    mask = np.zeros((5, 30), np.uint8)
    mask[:, :10] = 255  # the left third selected
    feathered = masks.feather(mask, 8)
    row = feathered[2].astype(int)
    assert (row[:10] == 255).all()
    expected = [round(255 * (1 - d / 9)) for d in range(1, 9)]
    assert row[10:18].tolist() == expected
    assert (row[18:] == 0).all()
    assert (np.diff(row) <= 0).all()


def test_invert() -> None:
    mask = np.array([[0, 255, 3]], np.uint8)
    assert masks.invert(mask).tolist() == [[255, 0, 0]]


def test_binary_cuts_soft_masks_at_half_and_takes_bools() -> None:
    assert masks.binary(np.array([[0, 127, 128, 255]], np.uint8)).tolist() == [[0, 0, 255, 255]]
    assert masks.binary(np.array([[True, False]])).tolist() == [[255, 0]]


def test_fill_holes_fills_an_enclosed_hole_only() -> None:
    yy, xx = np.mgrid[0:30, 0:40]
    ring = ((yy - 15) ** 2 + (xx - 15) ** 2 <= 100) & ((yy - 15) ** 2 + (xx - 15) ** 2 > 16)
    mask = np.where(ring, 255, 0).astype(np.uint8)
    mask[:, 36:] = 255  # a band at the right border...
    mask[10:20, 38:] = 0  # ...with a notch open to the border: not a hole
    filled = masks.fill_holes(mask)
    assert np.array_equal(sel(filled)[:, :30], ((yy - 15) ** 2 + (xx - 15) ** 2 <= 100)[:, :30])
    assert not sel(filled)[10:20, 38:].any()


def test_fill_holes_with_max_area_fills_small_holes_only() -> None:
    mask = np.full((30, 60), 255, np.uint8)
    mask[5:7, 5:7] = 0  # 4 pixels
    mask[5:25, 30:50] = 0  # 400 pixels
    filled = masks.fill_holes(mask, max_area=10)
    assert sel(filled)[5:7, 5:7].all()
    assert not sel(filled)[5:25, 30:50].any()
    assert sel(masks.fill_holes(mask)).all()
    assert np.array_equal(masks.fill_holes(mask, max_area=3), mask)


def test_remove_specks_keeps_pieces_at_least_min_area() -> None:
    mask = np.zeros((20, 30), np.uint8)
    mask[2:12, 2:12] = 255  # 100 px
    mask[15, 20] = 255  # 1 px
    mask[15:17, 25:27] = 255  # 4 px
    mask[5, 20] = mask[6, 21] = 255  # 2 px touching diagonally: one piece
    cleaned = masks.remove_specks(mask, 4)
    expected = np.zeros_like(mask)
    expected[2:12, 2:12] = 255
    expected[15:17, 25:27] = 255
    assert np.array_equal(cleaned, expected)
    assert sel(masks.remove_specks(mask, 2))[5, 20]  # the diagonal pair counts as 2


def test_union_subtract_intersect() -> None:
    a = np.array([[255, 255, 0, 0]], np.uint8)
    b = np.array([[255, 0, 255, 0]], np.uint8)
    assert masks.union(a, b).tolist() == [[255, 255, 255, 0]]
    assert masks.subtract(a, b).tolist() == [[0, 255, 0, 0]]
    assert masks.intersect(a, b).tolist() == [[255, 0, 0, 0]]


def test_bounding_box() -> None:
    mask = np.zeros((10, 20), np.uint8)
    assert masks.bounding_box(mask) is None
    mask[3, 4] = mask[7, 15] = 255
    assert masks.bounding_box(mask) == (4, 3, 16, 8)
    assert masks.bounding_box(np.full((1, 1), 255, np.uint8)) == (0, 0, 1, 1)


def test_require_selection_refuses_empty_and_wrong_size() -> None:
    with pytest.raises(SelectionError, match="empty"):
        masks.require_selection(np.zeros((4, 5), np.uint8), (4, 5))
    with pytest.raises(SelectionError, match="5x4"):
        masks.require_selection(np.full((5, 4), 255, np.uint8), (4, 5))
    with pytest.raises(SelectionError):
        masks.require_selection(np.full((4, 5, 3), 255, np.uint8), (4, 5))
    assert masks.require_selection(np.full((4, 5), 200, np.uint8), (4, 5)).tolist() == [[255] * 5] * 4


# --- properties over many random masks -------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_every_operation_returns_a_binary_mask_of_the_same_shape(seed: int) -> None:
    rng = np.random.default_rng(seed + 100)
    for mask in cases(seed):
        shape = mask.shape
        other = random_mask(rng, *shape)
        n = int(rng.integers(0, 6))
        for result in (
            masks.invert(mask), masks.grow(mask, n), masks.shrink(mask, n), masks.grow(mask, -n),
            masks.fill_holes(mask), masks.fill_holes(mask, max_area=n), masks.remove_specks(mask, n + 1),
            masks.union(mask, other), masks.subtract(mask, other), masks.intersect(mask, other),
        ):
            assert is_binary(result, shape)
        feathered = masks.feather(mask, n)
        assert feathered.dtype == np.uint8 and feathered.shape == shape


@pytest.mark.parametrize("seed", [2, 3])
def test_grow_and_shrink_properties(seed: int) -> None:
    rng = np.random.default_rng(seed + 100)
    for mask in cases(seed):
        a, b = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        grown = sel(masks.grow(mask, a))
        shrunk = sel(masks.shrink(mask, a))
        # Growing adds, shrinking removes, both monotone in the distance.
        assert not (sel(mask) & ~grown).any()
        assert not (shrunk & ~sel(mask)).any()
        assert not (grown & ~sel(masks.grow(mask, a + b))).any()
        assert not (sel(masks.shrink(mask, a + b)) & ~shrunk).any()
        # Growing twice never reaches farther than growing once by the sum: the compositing
        # guarantee (pixels outside grow(mask, grow + feather) stay exact) rests on this.
        assert not (sel(masks.grow(masks.grow(mask, a), b)) & ~sel(masks.grow(mask, a + b))).any()
        # Opening stays inside the mask; closing contains it.
        assert not (sel(masks.grow(masks.shrink(mask, a), a)) & ~sel(mask)).any()
        assert not (sel(mask) & ~sel(masks.shrink(masks.grow(mask, a), a))).any()
        # Shrinking is growing the outside.
        assert np.array_equal(masks.shrink(mask, a), masks.invert(masks.grow(masks.invert(mask), a)))


@pytest.mark.parametrize("seed", [4, 5])
def test_grow_is_exact_euclidean_distance(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(25):
        height, width = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        mask = random_mask(rng, height, width)
        distance = distance_to(mask)
        for n in (1, 2, 3, 5, 8):
            assert np.array_equal(sel(masks.grow(mask, n)), distance <= n), (height, width, n)


@pytest.mark.parametrize("seed", [6, 7])
def test_feather_properties(seed: int) -> None:
    rng = np.random.default_rng(seed + 100)
    for mask in cases(seed):
        n = int(rng.integers(1, 12))
        feathered = masks.feather(mask, n)
        # 255 exactly on the mask, and the soft edge reaches exactly grow(mask, n).
        assert (feathered[sel(mask)] == 255).all()
        assert np.array_equal(feathered > 0, sel(masks.grow(mask, n)))
        outside = ~sel(mask)
        assert (feathered[outside] < 255).all()
        assert np.array_equal(masks.feather(mask, 0), masks.binary(mask))
        if mask.size <= 2000 and sel(mask).any():
            # The weight falls with the distance to the mask.
            distance = distance_to(mask)
            order = np.argsort(distance[outside], kind="stable")
            values = feathered[outside][order].astype(int)
            dist_sorted = distance[outside][order]
            closer = dist_sorted[:-1] < dist_sorted[1:]
            assert (values[:-1][closer] >= values[1:][closer]).all()


@pytest.mark.parametrize("seed", [8, 9])
def test_set_operations_and_invert_agree_with_logic(seed: int) -> None:
    rng = np.random.default_rng(seed + 100)
    for mask in cases(seed):
        other = random_mask(rng, *mask.shape)
        a, b = sel(mask), sel(other)
        assert np.array_equal(sel(masks.invert(mask)), ~a)
        assert np.array_equal(masks.invert(masks.invert(mask)), masks.binary(mask))
        assert np.array_equal(sel(masks.union(mask, other)), a | b)
        assert np.array_equal(sel(masks.subtract(mask, other)), a & ~b)
        assert np.array_equal(sel(masks.intersect(mask, other)), a & b)
        assert np.array_equal(masks.union(masks.subtract(mask, other), masks.intersect(mask, other)),
                              masks.binary(mask))


@pytest.mark.parametrize("seed", [10, 11])
def test_fill_holes_and_remove_specks_properties(seed: int) -> None:
    rng = np.random.default_rng(seed + 100)
    for mask in cases(seed):
        filled = sel(masks.fill_holes(mask))
        assert not (sel(mask) & ~filled).any()  # only adds
        added = filled & ~sel(mask)
        height, width = mask.shape
        if added.any():  # nothing reachable from the border is filled
            ys, xs = np.nonzero(added)
            assert ys.min() > 0 and xs.min() > 0 and ys.max() < height - 1 and xs.max() < width - 1
        assert np.array_equal(masks.fill_holes(masks.fill_holes(mask)), masks.fill_holes(mask))  # idempotent
        limited = sel(masks.fill_holes(mask, max_area=int(rng.integers(0, 50))))
        assert not (sel(mask) & ~limited).any() and not (limited & ~filled).any()
        # What is left unselected after filling is all reachable from the border.
        count, labels = cv2.connectedComponents((~filled).astype(np.uint8), connectivity=4)
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        assert set(range(1, count)) <= set(border.tolist())
        min_area = int(rng.integers(1, 30))
        cleaned = masks.remove_specks(mask, min_area)
        assert not (sel(cleaned) & ~sel(mask)).any()  # only removes
        assert np.array_equal(masks.remove_specks(cleaned, min_area), cleaned)
        assert np.array_equal(masks.remove_specks(mask, 1), masks.binary(mask))


@pytest.mark.parametrize("seed", [12])
def test_bounding_box_property(seed: int) -> None:
    for mask in cases(seed):
        box = masks.bounding_box(mask)
        ys, xs = np.nonzero(mask)
        if ys.size == 0:
            assert box is None
            continue
        assert box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        x0, y0, x1, y1 = box
        assert sel(mask)[y0:y1, x0:x1].sum() == sel(mask).sum()


def test_refine_grows_then_feathers() -> None:
    mask = np.zeros((21, 21), np.uint8)
    mask[10, 10] = 255
    refined = masks.refine(mask, grow_px=2, feather_px=3)
    assert (refined[sel(masks.grow(mask, 2))] == 255).all()
    assert np.array_equal(refined > 0, sel(masks.grow(masks.grow(mask, 2), 3)))


@pytest.mark.parametrize("seed", [8, 9])
def test_grow_and_feather_of_a_small_selection_in_a_big_photo_match_the_whole_photo_computation(seed: int) -> None:
    """Grow and feather work on a window around the selection; the result is the full image's."""
    rng = np.random.default_rng(seed)
    height, width = 600, 900
    mask = np.zeros((height, width), np.uint8)
    y, x = int(rng.integers(0, height - 40)), int(rng.integers(0, width - 40))
    mask[y : y + 40, x : x + 40] = random_mask(rng, 40, 40)
    mask[0, int(rng.integers(0, width))] = 255  # and one pixel on the border
    # The whole photo's exact Euclidean distance to the selection, as OpenCV computes it.
    distance = cv2.distanceTransform(np.where(mask > 0, 0, 255).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    for n in (1, 6, 25):
        assert np.array_equal(sel(masks.grow(mask, n)), distance <= n)
        ramp = np.where(distance <= n, 1.0 - distance / (n + 1), 0.0)
        assert np.array_equal(masks.feather(mask, n), np.rint(ramp * 255).astype(np.uint8))


def _distance_to_polyline(shape: tuple[int, int], points: list[tuple[float, float]]) -> np.ndarray:
    """The exact Euclidean distance of every pixel centre to the polyline (brute force)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    best = np.full(shape, np.inf)
    pairs = list(zip(points, points[1:])) or [(points[0], points[0])]
    for (x0, y0), (x1, y1) in pairs:
        dx, dy = x1 - x0, y1 - y0
        length = dx * dx + dy * dy
        t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / length, 0, 1) if length else np.zeros(shape)
        best = np.minimum(best, np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy)))
    return best


@pytest.mark.parametrize("seed", range(12))
def test_a_stroke_paints_what_lies_within_its_radius_of_the_line(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(20, 120)), int(rng.integers(20, 120)))
    points = [(float(rng.uniform(0, shape[1] - 1)), float(rng.uniform(0, shape[0] - 1)))
              for _ in range(int(rng.integers(1, 6)))]
    radius = float(rng.uniform(0.5, 15))
    painted = masks.stroke(shape, points, radius)
    distance = _distance_to_polyline(shape, points)
    assert set(np.unique(painted)) <= {0, 255}
    assert painted[distance <= radius - 1].all()  # the line lands to within a pixel, not a display pixel's 4.7
    assert not painted[distance > radius + 1].any()


def test_a_dab_is_a_round_spot_and_a_stroke_off_the_photo_is_clipped() -> None:
    dab = masks.stroke((41, 41), [(20.0, 20.0)], 6)
    yy, xx = np.mgrid[0:41, 0:41]
    assert np.array_equal(dab > 0, np.hypot(xx - 20, yy - 20) <= 6)
    edge = masks.stroke((10, 10), [(-50.0, 5.0), (50.0, 5.0)], 1)
    assert edge[5].all() and edge.shape == (10, 10)
