import gzip
import itertools
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from scipy import ndimage

from chimerax.modelangelo.errors import MapError, OutputError
from chimerax.modelangelo.mapio import (
    MapGrid,
    MapWarning,
    apply_b_factor,
    auto_sharpen,
    check_size,
    crop_to_region,
    guinier_b,
    interpolate,
    normalise,
    read_map,
    resample,
    resample_shape,
    resample_to,
    write_map,
)
from chimerax.modelangelo.protein import load_protein

REAL_MAPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_maps"
REAL_DIRS = sorted(p for p in REAL_MAPS.glob("*") if list(p.glob("emd_*.mrc")))


# --------------------------------------------------------------------------- helpers


def gaussian_at(xyz: np.ndarray, centre, sigma: float = 2.0) -> np.ndarray:
    return np.exp(-((xyz - np.asarray(centre)) ** 2).sum(-1) / (2 * sigma**2))


def grid_xyz(g: MapGrid) -> np.ndarray:
    """[nz, ny, nx, 3] voxel centres."""
    k, j, i = np.indices(g.shape)
    return g.ijk_to_xyz(np.stack([i, j, k], -1).reshape(-1, 3)).reshape(g.shape + (3,))


def blob_grid(shape_zyx, voxel_size, origin, centre, sigma=2.0) -> MapGrid:
    g = MapGrid(np.zeros(shape_zyx, np.float32), voxel_size, origin)
    g.data = gaussian_at(grid_xyz(g), centre, sigma).astype(np.float32)
    return g


def centroid(g: MapGrid, near=None, radius: float = 6.0) -> np.ndarray:
    xyz = grid_xyz(g).reshape(-1, 3)
    w = np.clip(g.data.reshape(-1).astype(np.float64), 0, None)
    if near is not None:
        w = w * (np.linalg.norm(xyz - near, axis=1) < radius)
    return (xyz * w[:, None]).sum(0) / w.sum()


def write_mrc(path, file_array, *, voxel_xyz, n_xyz, mapcrs=(1, 2, 3), nstart_crs=(0, 0, 0),
              origin_field=(0.0, 0.0, 0.0), ispg=1, mz=None):
    """Write ``file_array`` [sections, rows, columns] with explicit header fields."""
    with mrcfile.new(str(path), overwrite=True) as m:
        m.set_data(file_array)
        h = m.header
        h.mapc, h.mapr, h.maps = mapcrs
        h.mx, h.my, h.mz = n_xyz[0], n_xyz[1], n_xyz[2] if mz is None else mz
        h.cella.x, h.cella.y, h.cella.z = (float(n_xyz[a] * voxel_xyz[a]) for a in range(3))
        h.nxstart, h.nystart, h.nzstart = nstart_crs
        h.origin.x, h.origin.y, h.origin.z = origin_field
        h.ispg = ispg


def synthetic_file(mapcrs, voxel_xyz, n_xyz, origin_xyz, blob, sigma=2.0):
    """File array [s, r, c] of a blob, computed from the MRC definitions (column c runs
    along axis MAPC, ...), independently of read_map."""
    ax_c, ax_r, ax_s = (m - 1 for m in mapcrs)
    shape = (n_xyz[ax_s], n_xyz[ax_r], n_xyz[ax_c])
    s, r, c = np.indices(shape)
    xyz = np.zeros(shape + (3,))
    xyz[..., ax_c] = origin_xyz[ax_c] + c * voxel_xyz[ax_c]
    xyz[..., ax_r] = origin_xyz[ax_r] + r * voxel_xyz[ax_r]
    xyz[..., ax_s] = origin_xyz[ax_s] + s * voxel_xyz[ax_s]
    return gaussian_at(xyz, blob, sigma).astype(np.float32)


def read_quiet(path):
    w: list[str] = []
    return read_map(path, warnings=w), w


# --------------------------------------------------------------------------- real maps


def test_real_maps_present():
    assert len(REAL_DIRS) >= 3


def _ca_density_checks(g: MapGrid, ca: np.ndarray) -> None:
    vals = interpolate(g, ca)
    p90 = np.percentile(g.data, 90)
    frac = float((vals > p90).mean())
    z = (vals.mean() - g.data.mean()) / g.data.std()
    # Measured: >= 0.995 of CAs above the 90th percentile and z >= 3.6 on the three maps,
    # before and after resampling; a 6 A shift drops the fraction to 0.31-0.66.
    assert frac >= 0.95, frac
    assert z >= 3.0, z
    shifted = interpolate(g, ca + [6.0, 0, 0])
    assert (shifted > p90).mean() < 0.75
    # The deposited position is a local maximum of the mean CA density: shifting the
    # model by one voxel along any axis lowers it (catches off-by-one origins/axes).
    for axis, step in itertools.product(range(3), (-1, 1)):
        d = np.zeros(3)
        d[axis] = step * g.voxel_size[axis]
        assert interpolate(g, ca + d).mean() < vals.mean(), (axis, step)


@pytest.mark.parametrize("folder", REAL_DIRS, ids=lambda p: p.name)
def test_real_map_ca_on_density(folder):
    g, warns = read_quiet(next(folder.glob("emd_*.mrc")))
    assert warns == []
    ca = load_protein(next(folder.glob("*_deposited.cif"))).ca
    assert np.all((ca >= g.extent[0]) & (ca <= g.extent[1]))
    _ca_density_checks(g, ca)
    for method in ("fourier", "trilinear"):
        r = resample(g, 1.5, method=method)
        assert np.allclose(r.voxel_size, 1.5) and np.allclose(r.origin, g.origin)
        assert np.all(r.extent[1] <= g.extent[1] + 1e-6)
        assert np.all(r.extent[1] > g.extent[1] - 1.5)
        _ca_density_checks(r, ca)


@pytest.mark.parametrize("category, message", [
    (ResourceWarning, "unclosed file <_io.TextIOWrapper name=13>"),
    # what mrcfile 1.5.4 triggers under NumPy 2.5 (seen on a GPU machine, 2026-11-25)
    (DeprecationWarning, "Setting the dtype on a NumPy array has been deprecated in NumPy 2.5."),
    (PendingDeprecationWarning, "this will change"),
    (FutureWarning, "a library default will change"),
])
def test_library_warnings_are_not_header_problems(monkeypatch, category, message):
    """Warnings not about the file, raised inside read_map's warning capture (another
    object's unclosed file collected meanwhile, a library's deprecation notices), are
    not reported as header problems of the map."""
    import mrcfile

    real_open = mrcfile.open

    def open_with_noise(*args, **kwargs):
        warnings.warn(message, category, stacklevel=1)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(mrcfile, "open", open_with_noise)
    _, warns = read_quiet(next(REAL_DIRS[0].glob("emd_*.mrc")))
    assert warns == []


@pytest.mark.parametrize("folder", REAL_DIRS, ids=lambda p: p.name)
def test_real_map_normalise(folder):
    g = read_map(next(folder.glob("emd_*.mrc")))
    ca = load_protein(next(folder.glob("*_deposited.cif"))).ca
    n = normalise(g)
    ca_n = float(interpolate(n, ca).mean())
    assert 0.4 < ca_n < 1.2, ca_n  # measured 0.52-0.82
    assert abs(float(np.median(n.data))) < 1e-6
    # arbitrary scale, offset and sign convention give the same normalised map
    w: list[str] = []
    inv = normalise(MapGrid(-250.0 * g.data + 17.0, g.voxel_size, g.origin), warnings=w)
    assert len(w) == 1 and "inverted" in w[0]
    np.testing.assert_allclose(inv.data, n.data, atol=1e-4)
    # more empty (masked) box around the molecule changes little
    big = np.zeros(tuple(int(s * 1.6) for s in g.shape), np.float32)
    big[: g.shape[0], : g.shape[1], : g.shape[2]] = g.data
    nb = normalise(MapGrid(big, g.voxel_size, g.origin))
    assert float(interpolate(nb, ca).mean()) == pytest.approx(ca_n, rel=0.05)
    # and so does filling the masked-out region with noise
    rng = np.random.default_rng(1)
    inside = g.data[g.data != 0]
    sigma = np.sqrt(np.mean(inside[inside < 0] ** 2))
    noisy = g.data + (g.data == 0) * rng.normal(0, sigma, g.shape).astype(np.float32)
    nn = normalise(MapGrid(noisy, g.voxel_size, g.origin))
    assert float(interpolate(nn, ca).mean()) == pytest.approx(ca_n, rel=0.35)


def test_real_map_write_read_roundtrip(tmp_path):
    src = next(REAL_DIRS[0].glob("emd_*.mrc"))
    g = read_map(src)
    for name in ("copy.mrc", "copy.map.gz"):
        write_map(tmp_path / name, g)
        back, warns = read_quiet(tmp_path / name)
        assert warns == []
        np.testing.assert_array_equal(back.data, g.data)
        np.testing.assert_allclose(back.origin, g.origin, atol=1e-4)
        np.testing.assert_allclose(back.voxel_size, g.voxel_size, rtol=1e-6)


# --------------------------------------------------------------------------- conventions

AXIS_ORDERS = list(itertools.permutations((1, 2, 3)))


@pytest.mark.parametrize("convention", ["origin_field", "nstart", "zero"])
@pytest.mark.parametrize("mapcrs", AXIS_ORDERS, ids=lambda p: "".join(map(str, p)))
def test_header_conventions(tmp_path, mapcrs, convention):
    voxel = np.array([1.1, 0.9, 1.4])  # non-square voxels
    n_xyz = np.array([22, 27, 17])  # non-cubic box
    if convention == "origin_field":
        origin = np.array([-31.5, 12.25, 101.0])
    elif convention == "nstart":
        origin = np.array([-7, 12, 30]) * voxel
    else:
        origin = np.zeros(3)
    blob = origin + np.array([9.3, 13.1, 11.7])
    arr = synthetic_file(mapcrs, voxel, n_xyz, origin, blob)
    ax = [m - 1 for m in mapcrs]
    kwargs = {}
    if convention == "origin_field":
        kwargs["origin_field"] = tuple(origin)
    elif convention == "nstart":
        start_xyz = np.rint(origin / voxel).astype(int)
        kwargs["nstart_crs"] = tuple(int(start_xyz[a]) for a in ax)
    path = tmp_path / "m.mrc"
    write_mrc(path, arr, voxel_xyz=voxel, n_xyz=n_xyz, mapcrs=mapcrs, **kwargs)

    g, warns = read_quiet(path)
    assert warns == []
    assert g.shape == tuple(n_xyz[::-1])
    np.testing.assert_allclose(g.voxel_size, voxel, rtol=1e-6)
    np.testing.assert_allclose(g.origin, origin, atol=1e-4)
    # every voxel holds the density of its own position
    np.testing.assert_allclose(g.data, gaussian_at(grid_xyz(g), blob), atol=1e-6)
    assert np.linalg.norm(centroid(g) - blob) < 0.02
    peak = np.unravel_index(np.argmax(g.data), g.shape)
    assert np.linalg.norm(g.ijk_to_xyz(np.array(peak[::-1])) - blob) <= np.linalg.norm(voxel) / 2
    assert interpolate(g, blob[None])[0] > 0.8


def test_origin_field_wins_over_nstart(tmp_path):
    voxel, n = np.array([1.2, 1.2, 1.2]), np.array([16, 18, 20])
    origin = np.array([50.0, -20.0, 7.5])
    blob = origin + [8, 9, 10]
    arr = synthetic_file((1, 2, 3), voxel, n, origin, blob)
    write_mrc(tmp_path / "m.mrc", arr, voxel_xyz=voxel, n_xyz=n, nstart_crs=(-8, -9, -10),
              origin_field=tuple(origin))
    g, warns = read_quiet(tmp_path / "m.mrc")
    np.testing.assert_allclose(g.origin, origin, atol=1e-4)
    assert len(warns) == 1 and "ORIGIN" in warns[0]
    assert np.linalg.norm(centroid(g) - blob) < 0.02


def test_uninitialised_nstart_is_ignored(tmp_path):
    arr = np.random.default_rng(0).normal(size=(10, 11, 12)).astype(np.float32)
    write_mrc(tmp_path / "m.mrc", arr, voxel_xyz=(1, 1, 1), n_xyz=(12, 11, 10),
              nstart_crs=(0, -2_000_000, 0))
    g, warns = read_quiet(tmp_path / "m.mrc")
    np.testing.assert_array_equal(g.origin, 0)
    assert any("uninitialised" in w for w in warns)


def test_invalid_axis_order_falls_back_with_warning(tmp_path):
    arr = np.random.default_rng(0).normal(size=(10, 11, 12)).astype(np.float32)
    write_mrc(tmp_path / "m.mrc", arr, voxel_xyz=(1, 1, 1), n_xyz=(12, 11, 10),
              mapcrs=(1, 1, 3))
    g, warns = read_quiet(tmp_path / "m.mrc")
    np.testing.assert_array_equal(g.data, arr)
    assert any("axis order" in w for w in warns)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint16, np.float16, np.float32])
def test_data_modes(tmp_path, dtype):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None:
        arr = rng.integers(info.min, info.max, size=(6, 7, 8), endpoint=True).astype(dtype)
    else:
        arr = rng.normal(size=(6, 7, 8)).astype(dtype)
    write_mrc(tmp_path / "m.mrc", arr, voxel_xyz=(1, 1, 1), n_xyz=(8, 7, 6))
    with mrcfile.open(tmp_path / "m.mrc") as m:
        assert int(m.header.mode) == {np.int8: 0, np.int16: 1, np.uint16: 6,
                                      np.float16: 12, np.float32: 2}[dtype]
    g, _ = read_quiet(tmp_path / "m.mrc")
    assert g.data.dtype == np.float32
    np.testing.assert_array_equal(g.data, arr.astype(np.float32))


def test_big_endian_map(tmp_path):
    arr = np.random.default_rng(0).normal(size=(8, 9, 10)).astype(">f4")
    with mrcfile.new(tmp_path / "be.mrc") as m:
        m.set_data(arr)
        m.voxel_size = 1.3
    assert (tmp_path / "be.mrc").read_bytes()[:4] == b"\x00\x00\x00\x0a"  # nx=10, big-endian
    g, _ = read_quiet(tmp_path / "be.mrc")
    np.testing.assert_array_equal(g.data, arr.astype(np.float32))
    np.testing.assert_allclose(g.voxel_size, 1.3, rtol=1e-6)


def test_pre2000_mrc_header(tmp_path):
    # No 'MAP ' stamp: no ORIGIN field (words 50-52 mean something else), origin from the
    # starts, mode 0 bytes unsigned.
    arr = np.full((8, 9, 10), -56, np.int8)  # byte 0xC8 = 200 unsigned
    arr[0, 0, 0] = 5
    write_mrc(tmp_path / "old.mrc", arr, voxel_xyz=(2, 2, 2), n_xyz=(10, 9, 8),
              nstart_crs=(2, 3, 4), origin_field=(99.0, 0.0, 0.0))
    raw = bytearray((tmp_path / "old.mrc").read_bytes())
    raw[208:212] = b"\0\0\0\0"
    (tmp_path / "old.mrc").write_bytes(bytes(raw))
    g, warns = read_quiet(tmp_path / "old.mrc")
    np.testing.assert_allclose(g.origin, [4.0, 6.0, 8.0])
    assert sorted(np.unique(g.data).tolist()) == [5.0, 200.0]
    assert len(warns) == 1 and "header problems" in warns[0]


def test_gzipped_map(tmp_path):
    arr = synthetic_file((1, 2, 3), (1, 1, 1), (12, 12, 12), (0, 0, 0), (5, 6, 7))
    write_mrc(tmp_path / "m.mrc", arr, voxel_xyz=(1, 1, 1), n_xyz=(12, 12, 12))
    (tmp_path / "m.mrc.gz").write_bytes(gzip.compress((tmp_path / "m.mrc").read_bytes()))
    g, _ = read_quiet(tmp_path / "m.mrc.gz")
    np.testing.assert_array_equal(g.data, arr)


@pytest.mark.filterwarnings("ignore:Data array contains NaN")
def test_few_nonfinite_values_are_repaired(tmp_path):
    arr = np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32)
    arr[0, 0, 0] = np.nan
    arr[5, 5, 5] = np.inf
    write_mrc(tmp_path / "m.mrc", arr, voxel_xyz=(1, 1, 1), n_xyz=(20, 20, 20))
    g, warns = read_quiet(tmp_path / "m.mrc")
    assert np.all(np.isfinite(g.data))
    assert any("NaN" in w for w in warns)
    with pytest.warns(MapWarning, match="NaN"):
        read_map(tmp_path / "m.mrc")


# --------------------------------------------------------------------------- read errors


def _map_file(tmp_path, arr=None, name="m.mrc", **kw):
    if arr is None:
        arr = np.random.default_rng(0).normal(size=(8, 9, 10)).astype(np.float32)
    n_xyz = kw.pop("n_xyz", arr.shape[::-1])
    write_mrc(tmp_path / name, arr, voxel_xyz=kw.pop("voxel_xyz", (1, 1, 1)), n_xyz=n_xyz, **kw)
    return tmp_path / name


def test_error_missing_empty_and_folder(tmp_path):
    with pytest.raises(MapError, match="not found"):
        read_map(tmp_path / "nope.mrc")
    (tmp_path / "empty.mrc").write_bytes(b"")
    with pytest.raises(MapError, match="empty"):
        read_map(tmp_path / "empty.mrc")
    with pytest.raises(MapError, match="folder"):
        read_map(tmp_path)


def test_error_not_an_mrc_file(tmp_path):
    (tmp_path / "text.mrc").write_text("this is not a map\n" * 200)
    with pytest.raises(MapError, match="not an MRC"):
        read_map(tmp_path / "text.mrc")
    cif = next(REAL_DIRS[0].glob("*_deposited.cif"))
    with pytest.raises(MapError, match="not an MRC"):
        read_map(cif)
    (tmp_path / "short.mrc").write_bytes(b"\x01\x02\x03")
    with pytest.raises(MapError):
        read_map(tmp_path / "short.mrc")


def test_error_truncated(tmp_path):
    path = _map_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(MapError, match="truncated"):
        read_map(path)


def test_error_images_and_stacks(tmp_path):
    img = np.ones((1, 9, 10), np.float32)
    img[0, 3, 3] = 2
    with pytest.raises(MapError, match="2D image"):
        read_map(_map_file(tmp_path, img, "img.mrc"))
    stack = np.random.default_rng(0).normal(size=(5, 9, 10)).astype(np.float32)
    with pytest.raises(MapError, match="image stack"):
        read_map(_map_file(tmp_path, stack, "s.mrc", ispg=0, mz=1))
    with pytest.raises(MapError, match="image stack"):
        read_map(_map_file(tmp_path, stack, "s.mrcs", ispg=0))
    vstack = np.random.default_rng(0).normal(size=(2, 4, 9, 10)).astype(np.float32)
    with mrcfile.new(tmp_path / "v.mrc") as m:
        m.set_data(vstack)
    with pytest.raises(MapError, match="stack of 2 volumes"):
        read_map(tmp_path / "v.mrc")
    # a real volume with ISPG 0 (as in the EMDB files here) is accepted
    g, _ = read_quiet(_map_file(tmp_path, stack, "vol.mrc", ispg=0))
    assert g.shape == (5, 9, 10)


@pytest.mark.filterwarnings("ignore:Data array contains NaN")
def test_error_constant_and_nonfinite(tmp_path):
    with pytest.raises(MapError, match="same value"):
        read_map(_map_file(tmp_path, np.full((8, 9, 10), 3.0, np.float32), "c.mrc"))
    arr = np.random.default_rng(0).normal(size=(8, 9, 10)).astype(np.float32)
    arr[:2] = np.nan
    with pytest.raises(MapError, match="NaN"):
        read_map(_map_file(tmp_path, arr, "n.mrc"))


@pytest.mark.parametrize("voxel", [(0.0, 1.0, 1.0), (1.0, -1.0, 1.0)])
def test_error_bad_voxel_size(tmp_path, voxel):
    with pytest.raises(MapError, match="voxel size"):
        read_map(_map_file(tmp_path, voxel_xyz=voxel))


def test_error_zero_sampling(tmp_path):
    path = _map_file(tmp_path)
    with mrcfile.open(path, mode="r+") as m:
        m.header.mx = 0
    with pytest.raises(MapError, match="voxel size"):
        read_map(path)


def test_error_non_orthogonal_and_complex(tmp_path):
    path = _map_file(tmp_path)
    with mrcfile.open(path, mode="r+") as m:
        m.header.cellb.gamma = 120.0
    with pytest.raises(MapError, match="non-orthogonal"):
        read_map(path)
    with mrcfile.new(tmp_path / "cx.mrc") as m:
        m.set_data(np.ones((4, 5, 6), np.complex64))
    with pytest.raises(MapError, match="mode 4"):
        read_map(tmp_path / "cx.mrc")


# --------------------------------------------------------------------------- writing


def test_write_map_refuses_overwrite(tmp_path):
    g = blob_grid((10, 11, 12), (1.0, 1.1, 1.2), (3.0, 4.0, 5.0), (8, 9, 10))
    path = tmp_path / "out.mrc"
    write_map(path, g)
    before = path.read_bytes()
    with pytest.raises(OutputError, match="exists"):
        write_map(path, MapGrid(g.data * 2, g.voxel_size, g.origin))
    assert path.read_bytes() == before
    write_map(path, MapGrid(g.data * 2, g.voxel_size, g.origin), overwrite=True)
    back, _ = read_quiet(path)
    np.testing.assert_allclose(back.data, g.data * 2)
    np.testing.assert_allclose(back.voxel_size, g.voxel_size, rtol=1e-6)
    np.testing.assert_allclose(back.origin, g.origin, atol=1e-5)
    with pytest.raises(OutputError, match="does not exist"):
        write_map(tmp_path / "missing" / "out.mrc", g)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mrc"]  # no temp files left


# --------------------------------------------------------------------------- MapGrid


def test_mapgrid_coordinates():
    g = MapGrid(np.zeros((4, 5, 6)), (1.0, 2.0, 3.0), (10.0, 20.0, 30.0))
    assert g.data.dtype == np.float32 and g.shape == (4, 5, 6)
    ijk = np.array([[0, 0, 0], [5, 4, 3], [1.5, 2.25, 0.5]])
    xyz = g.ijk_to_xyz(ijk)
    np.testing.assert_allclose(xyz[1], [15.0, 28.0, 39.0])
    np.testing.assert_allclose(g.xyz_to_ijk(xyz), ijk)
    np.testing.assert_allclose(g.extent, [[10, 20, 30], [15, 28, 39]])
    c = g.copy()
    c.data[0, 0, 0] = 1
    c.origin[0] = 0
    assert g.data[0, 0, 0] == 0 and g.origin[0] == 10
    with pytest.raises(MapError):
        MapGrid(np.zeros((4, 5, 6)), (1.0, 0.0, 1.0), 0)
    with pytest.raises(MapError):
        MapGrid(np.zeros((4, 5)), 1.0, 0)
    assert "6x5x4 voxels" in repr(g)


def test_interpolate():
    rng = np.random.default_rng(0)
    g = MapGrid(rng.normal(size=(6, 7, 8)), (1.0, 1.5, 2.0), (-3.0, 2.0, 5.0))
    k, j, i = 2, 3, 4
    xyz = g.ijk_to_xyz(np.array([[i, j, k], [i + 0.5, j, k], [7, 6, 5], [7.5, 0, 0],
                                 [-0.01, 0, 0]]))
    v = interpolate(g, xyz)
    assert v[0] == pytest.approx(g.data[k, j, i])
    assert v[1] == pytest.approx(0.5 * (g.data[k, j, i] + g.data[k, j, i + 1]))
    assert v[2] == pytest.approx(g.data[5, 6, 7])  # last voxel is inside
    assert v[3] == 0 and v[4] == 0  # outside
    # the last voxel, reached through coordinates that overshoot by rounding (5e-15), is in
    h = MapGrid(rng.normal(size=(8, 8, 8)), 0.3, -50.0)
    corner = h.ijk_to_xyz(np.array([[7, 7, 7]]))
    assert np.all(h.xyz_to_ijk(corner) > 7)
    assert interpolate(h, corner)[0] == pytest.approx(h.data[7, 7, 7])
    pts = rng.uniform(g.extent[0], g.extent[1], size=(50, 3))
    ref = ndimage.map_coordinates(g.data, g.xyz_to_ijk(pts)[:, ::-1].T, order=1)
    np.testing.assert_allclose(interpolate(g, pts), ref, atol=1e-6)


# --------------------------------------------------------------------------- resampling


@pytest.mark.parametrize("method", ["fourier", "trilinear"])
def test_resample_round_trip_keeps_positions(method):
    blobs = [np.array([13.3, 21.7, 17.1]), np.array([30.2, 15.5, 25.9])]
    g = blob_grid((40, 45, 50), 1.1, (-5.0, 3.0, 2.0), blobs[0])
    g.data += blob_grid((40, 45, 50), 1.1, (-5.0, 3.0, 2.0), blobs[1]).data
    r = resample(g, 1.5, method=method)
    assert r.shape == resample_shape(g, 1.5) == (29, 33, 36)
    back = resample_to(r, g, method=method)
    assert back.shape == g.shape
    np.testing.assert_allclose(back.origin, g.origin)
    for b in blobs:
        assert np.linalg.norm(centroid(r, b) - b) < 0.1
        assert np.linalg.norm(centroid(back, b) - b) < 0.1
    if method == "fourier":  # band-limited content survives the round trip almost exactly
        inner = (slice(2, -2),) * 3
        assert np.abs(back.data - g.data)[inner].max() < 0.01


def test_resample_anisotropic_voxels():
    blob = np.array([14.0, 22.5, 19.3])
    g = blob_grid((30, 45, 50), (1.0, 1.2, 1.7), (0.5, 1.0, -3.0), blob)
    for method in ("fourier", "trilinear"):
        r = resample(g, 1.5, method=method)
        np.testing.assert_allclose(r.voxel_size, 1.5)
        assert np.linalg.norm(centroid(r, blob) - blob) < 0.1
        np.testing.assert_allclose(r.data, gaussian_at(grid_xyz(r), blob),
                                   atol=0.02 if method == "fourier" else 0.2)


def test_fourier_is_band_limited_trilinear_aliases():
    # A wave at 0.25 cycles/A is below the 1.5 A Nyquist (0.333): kept exactly by
    # "fourier". A wave at 0.4 cycles/A is above it: removed by "fourier", aliased by
    # "trilinear".
    g = MapGrid(np.zeros((64, 8, 8), np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    z = grid_xyz(g)[..., 2]
    for freq, expect_kept in ((0.25, True), (0.4, False)):
        g.data = np.cos(2 * np.pi * freq * z).astype(np.float32)
        r = resample(g, 1.5)
        zr = grid_xyz(r)[..., 2]
        inner = (slice(6, -6), slice(None), slice(None))
        if expect_kept:
            err = np.abs(r.data - np.cos(2 * np.pi * freq * zr))[inner].max()
            assert err < 0.05, err
        else:
            assert np.abs(r.data[inner]).max() < 0.1
            assert np.abs(resample(g, 1.5, method="trilinear").data).max() > 0.5


def test_fourier_resample_of_non_periodic_map_has_no_edge_ringing():
    # A gradient is not periodic: without care the FFT sees a jump at the box edges and
    # rings. The ramp padding keeps the error small everywhere, edges included.
    g = MapGrid(np.zeros((6, 6, 64)), 1.0, 0.0)
    g.data[:] = np.arange(64) * 0.1  # 0 .. 6.3 along x
    r = resample(g, 1.5)
    x = grid_xyz(r)[..., 0]
    err = np.abs(r.data - 0.1 * x)
    assert err.max() < 0.12, err.max()
    assert err[:, :, 4:-4].max() < 0.01


def test_trilinear_matches_map_coordinates():
    rng = np.random.default_rng(0)
    g = MapGrid(rng.normal(size=(20, 21, 22)), (1.05, 0.8, 1.3), (2.0, -1.0, 4.0))
    r = resample(g, 1.5, method="trilinear")
    ijk = g.xyz_to_ijk(grid_xyz(r).reshape(-1, 3))
    ref = ndimage.map_coordinates(g.data, ijk[:, ::-1].T, order=1, mode="nearest")
    np.testing.assert_allclose(r.data.reshape(-1), ref, atol=1e-5)


def test_resample_same_size_and_errors():
    g = blob_grid((10, 10, 10), 1.5, 0.0, (7, 7, 7))
    r = resample(g, 1.5)
    np.testing.assert_array_equal(r.data, g.data)
    assert r.data is not g.data
    with pytest.raises(MapError, match="method"):
        resample(g, 1.2, method="cubic")
    with pytest.raises(MapError):
        resample(g, 0.0)


def test_resample_to_outside_is_zero():
    g = blob_grid((20, 20, 20), 1.0, 0.0, (10, 10, 10))
    like = MapGrid(np.zeros((10, 10, 10)), 1.5, (-7.5, 5.0, 5.0))
    for method in ("fourier", "trilinear"):
        out = resample_to(g, like, method=method)
        assert out.shape == like.shape
        np.testing.assert_allclose(out.origin, like.origin)
        x = grid_xyz(out)[..., 0]
        assert np.all(out.data[x < -1e-6] == 0)
        assert np.abs(out.data[x >= 0] - gaussian_at(grid_xyz(out), (10, 10, 10))[x >= 0]).max() < 0.05


# --------------------------------------------------------------------------- normalise


def test_normalise_synthetic():
    rng = np.random.default_rng(0)
    g = blob_grid((40, 40, 40), 1.5, 0.0, (30, 30, 30), sigma=4.0)
    g.data += rng.normal(0, 0.05, g.shape).astype(np.float32)
    n = normalise(g)
    assert abs(float(np.median(n.data))) < 1e-6
    assert interpolate(n, [[30, 30, 30]])[0] > 0.8
    n2 = normalise(MapGrid(g.data * 0.01 - 3, g.voxel_size, g.origin))
    np.testing.assert_allclose(n2.data, n.data, atol=1e-3)
    # pure noise is not flipped (no warning) and is not all zero
    w: list[str] = []
    noise = normalise(MapGrid(rng.normal(size=(40, 40, 40)), 1.0, 0.0), warnings=w)
    assert w == [] and noise.data.std() > 0
    with pytest.raises(MapError, match="contrast"):
        normalise(MapGrid(np.ones((5, 5, 5)), 1.0, 0.0))
    # the input is not modified
    assert interpolate(g, [[30, 30, 30]])[0] > 0.9


# --------------------------------------------------------------------------- size


def test_crop_to_region():
    blob = np.array([20.0, 25.0, 30.0])
    g = blob_grid((40, 40, 40), (1.0, 1.25, 1.5), (0.0, 0.0, 0.0), blob)
    c = crop_to_region(g, blob - 3, blob + 3, pad=2.0)
    assert np.all(c.extent[0] >= blob - 5 - 1e-9) and np.all(c.extent[1] <= blob + 5 + 1e-9)
    assert np.all(c.extent[0] < blob - 5 + g.voxel_size)
    assert np.all(c.extent[1] > blob + 5 - g.voxel_size)
    np.testing.assert_allclose(c.data, gaussian_at(grid_xyz(c), blob), atol=1e-6)
    assert np.shares_memory(c.data, g.data) is False
    edge = crop_to_region(g, [-100, -100, -100], [5, 5, 5])
    np.testing.assert_allclose(edge.origin, 0)
    with pytest.raises(MapError, match="does not overlap"):
        crop_to_region(g, [100, 100, 100], [120, 120, 120])


def test_check_size():
    huge = MapGrid(np.broadcast_to(np.float32(0), (900, 900, 900)), 1.5, 0.0)
    with pytest.raises(MapError, match=r"map is 900x900x900 voxels at 1.5 A.*crop it"):
        check_size(huge, 600**3)
    check_size(huge, 900**3)
    small = MapGrid(np.zeros((100, 100, 100)), 0.5, 0.0)
    check_size(small, 100**3)
    with pytest.raises(MapError, match="100x100x100 voxels at 0.5 A"):
        check_size(small, 100**3 - 1)
    # after resampling to 1.5 A it would be 34^3
    with pytest.raises(MapError, match="34x34x34 voxels at 1.5 A"):
        check_size(small, 34**3 - 1, voxel_size=1.5)
    check_size(small, 34**3, voxel_size=1.5)


def test_no_python_warnings_for_clean_maps():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_map(next(REAL_DIRS[0].glob("emd_*.mrc")))


# --------------------------------------------------------------------------- sharpening


@pytest.mark.parametrize("folder", REAL_DIRS, ids=lambda p: p.name)
def test_guinier_b_measures_applied_blur(folder):
    """On the real maps (1.5 A voxels): blurring by B raises the Guinier B by about B
    (amplitudes fall as exp(-B s^2 / 4)), and sharpening undoes a blur."""
    g = normalise(resample(read_map(next(folder.glob("emd_*.mrc"))), 1.5))
    b0 = guinier_b(g)
    assert b0 is not None and -50 < b0 < 300  # measured 33-113
    for extra in (30.0, 80.0):
        b1 = guinier_b(apply_b_factor(g, extra))
        assert b1 - b0 == pytest.approx(extra, abs=3.0)
    back = apply_b_factor(apply_b_factor(g, 40.0), -40.0)
    np.testing.assert_allclose(back.data, g.data, atol=1e-3 * float(np.abs(g.data).max()))
    assert guinier_b(MapGrid(g.data, np.full(3, 2.5, np.float32), g.origin)) is None  # Nyquist 5 A


def test_auto_sharpen_only_blurred_maps():
    g = normalise(resample(read_map(next(REAL_DIRS[0].glob("emd_*.mrc"))), 1.5))
    b0 = guinier_b(g)
    same, applied = auto_sharpen(g, target_b=b0 + 10, max_sharpen=60)
    assert applied == 0.0 and same is g
    blurred = normalise(apply_b_factor(g, 100.0))
    out, applied = auto_sharpen(blurred, target_b=b0, max_sharpen=60)
    assert applied == pytest.approx(-60.0)  # capped
    assert guinier_b(out) == pytest.approx(b0 + 40, abs=4.0)
    out, applied = auto_sharpen(blurred, target_b=b0 + 50, max_sharpen=200)
    assert applied == pytest.approx(-50, abs=4.0)
    # the sharpened map is normalised like any working map
    assert abs(float(np.median(out.data))) < 1e-6
