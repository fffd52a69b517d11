import itertools

import numpy as np
import pytest

from liverseg.orientation import (canonical_point_to_ras, canonical_transform, from_canonical, lps_to_ras,
                                  to_canonical)

from helpers import random_rotation_matrix


def _geometry(perm, flips, spacing=(0.7, 0.8, 2.5)):
    """IJK-to-RAS whose voxel axes are a permutation/flip of canonical (i -> L, j -> P, k -> S)."""
    canonical_dirs = np.array([[-1, 0, 0], [0, -1, 0], [0, 0, 1]], float)  # world dir of canonical i, j, k
    m = np.eye(4)
    for v in range(3):  # voxel axis v uses canonical axis perm[v]
        m[:3, v] = canonical_dirs[perm[v]] * (-1 if flips[v] else 1) * spacing[perm[v]]
    return m


@pytest.mark.parametrize("perm", list(itertools.permutations(range(3))))
@pytest.mark.parametrize("flips", list(itertools.product([False, True], repeat=3)))
def test_every_axis_order_maps_to_the_same_canonical_array(perm, flips):
    rng = np.random.default_rng(0)
    canonical = rng.integers(0, 1000, size=(5, 6, 7))  # [k, j, i] canonical
    # Build the input array that stores the same voxels with permuted/flipped axes.
    m = _geometry(perm, flips)
    # canonical voxel (i, j, k) sits at input voxel index u with u[v] = canonical index along perm[v] (flipped).
    sizes_ijk = (7, 6, 5)
    shape_ijk = tuple(sizes_ijk[perm[v]] for v in range(3))
    data = np.empty(shape_ijk[::-1], canonical.dtype)
    for u in itertools.product(*[range(n) for n in shape_ijk]):
        c = [0, 0, 0]
        for v in range(3):
            c[perm[v]] = (shape_ijk[v] - 1 - u[v]) if flips[v] else u[v]
        data[u[2], u[1], u[0]] = canonical[c[2], c[1], c[0]]
    t = canonical_transform(data.shape, m)
    np.testing.assert_array_equal(to_canonical(data, t), canonical)
    np.testing.assert_array_equal(from_canonical(to_canonical(data, t), t), data)
    assert t.spacing == pytest.approx((2.5, 0.8, 0.7))


@pytest.mark.parametrize("perm", list(itertools.permutations(range(3))))
@pytest.mark.parametrize("flips", [(False, False, False), (True, False, True), (False, True, True)])
def test_a_canonical_index_maps_back_to_its_voxels_ras_position(perm, flips):
    m = _geometry(perm, flips)
    m[:3, 3] = (12.0, -30.0, 85.0)
    shape_kji = (4, 5, 6)
    data = np.zeros(shape_kji, bool)
    data[1, 3, 2] = True  # input voxel i=2, j=3, k=1
    t = canonical_transform(shape_kji, m)
    (c,) = np.argwhere(to_canonical(data, t))
    expected = m @ np.array([2.0, 3.0, 1.0, 1.0])
    assert canonical_point_to_ras(tuple(c), t, m) == pytest.approx(tuple(expected[:3]))


def test_ras_and_lps_storage_of_one_volume_agree():
    data = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    lps = np.diag([1.0, 1.0, 2.0, 1.0])  # i -> L, j -> P: the canonical layout, stated in LPS
    ras = lps_to_ras(lps)
    t = canonical_transform(data.shape, ras)
    assert t.axes == (0, 1, 2) and t.flips == (False, False, False)
    # Same anatomy stored RAS-ordered (i -> R, j -> A): flipped along i and j.
    t2 = canonical_transform(data.shape, np.diag([1.0, 1.0, 2.0, 1.0]))
    np.testing.assert_array_equal(to_canonical(data[:, ::-1, ::-1], t2), data)


def test_oblique_direction_picks_the_closest_axes():
    rot = random_rotation_matrix(3, max_deg=25)
    m = np.eye(4)
    m[:3, :3] = rot @ np.diag([-0.8, -0.8, 3.0])
    t = canonical_transform((10, 20, 30), m)
    assert t.axes == (0, 1, 2) and t.flips == (False, False, False)
    assert t.spacing == pytest.approx((3.0, 0.8, 0.8))


def test_degenerate_geometry_is_refused():
    with pytest.raises(ValueError):
        canonical_transform((2, 2, 2), np.diag([0.0, 1, 1, 1]))
