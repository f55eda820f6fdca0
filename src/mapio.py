"""Cryo-EM maps: the :class:`MapGrid` array form, MRC/CCP4 reading and writing,
resampling, interpolation and normalisation.

Conventions
-----------
``MapGrid.data`` is ``[nz, ny, nx]`` float32. Voxel ``(k, j, i)`` (``data[k, j, i]``) has
its centre at ``origin + (i, j, k) * voxel_size``, with ``origin`` and ``voxel_size`` in
(x, y, z) order, Angstrom. Coordinates are those of the map file, which are those of a
model deposited with it.

Reading MRC/CCP4 (:func:`read_map`), matching UCSF ChimeraX:

* axis order: MAPC/MAPR/MAPS say which of x, y, z the file's columns, rows and sections
  run along; the data are transposed to ``[z, y, x]``. An invalid triple is read as 1, 2, 3
  with a warning.
* voxel size: cell lengths / MX, MY, MZ, per axis (non-cubic voxels are kept as they are).
* origin: the MRC2014 ORIGIN field (x, y, z, Angstrom) is used when any of its components
  is non-zero (and it is finite and not absurdly large); NXSTART/NYSTART/NZSTART are then
  ignored, with a warning if they are also non-zero. Otherwise the origin is
  ``start * voxel_size`` where ``start`` is NXSTART/NYSTART/NZSTART permuted by
  MAPC/MAPR/MAPS onto x, y, z (the start of the column axis belongs to axis MAPC, ...).
  Files without the ``MAP`` stamp (pre-2000 MRC) have no ORIGIN field: only the starts
  count. Starts larger than ten times the map size are taken as uninitialised (origin 0).
* data modes 0 (int8; uint8 for pre-2000 files and IMOD files flagged unsigned), 1 (int16),
  2 (float32), 6 (uint16) and 12 (float16) are read as float32.
* non-finite values: up to :data:`MAX_NONFINITE_FRACTION` of the voxels may be NaN/inf
  (edge artefacts of some programs); they are replaced by the median of the finite values
  with a warning. More is an error.
* refused with :class:`MapError`: missing/empty/non-MRC/truncated files, complex or 4-bit
  modes, 2D images, image stacks (ISPG 0 with MZ = 1, or a ``.mrcs`` file), volume stacks,
  maps thinner than 2 voxels, missing/zero/negative voxel sizes, non-orthogonal cells,
  constant maps.

Warnings (permissive header fixes, NaN replacement, ...) are appended to a ``warnings``
list when one is passed, else issued as :class:`MapWarning`.
"""

from __future__ import annotations

import math
import os
import warnings as _warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MapError, OutputError

__all__ = [
    "MapGrid", "MapWarning", "read_map", "write_map", "resample", "resample_to",
    "resample_shape", "interpolate", "normalise", "crop_to_region", "check_size",
    "guinier_b", "apply_b_factor", "auto_sharpen",
]

# Largest fraction of NaN/inf voxels that read_map repairs (replaced by the median) rather
# than refuses.
MAX_NONFINITE_FRACTION = 1e-3
# Voxels used for the statistics of normalise() (a fixed pseudo-random sample of larger maps).
_STATS_SAMPLE = 1 << 22
# normalise() flips the sign only if the skewness is below -_FLIP_SKEW and the low tail
# reaches _FLIP_TAIL_RATIO times further than the high tail (real maps: skew +2.7..+4.3).
_FLIP_SKEW = 0.5
_FLIP_TAIL_RATIO = 1.1
# Positions this close (in voxels) outside a grid still count as inside it.
_EDGE_TOL = 1e-6
_IMOD_STAMP = 1146047817
_VALID_MODES = {0: "int8", 1: "int16", 2: "float32", 6: "uint16", 12: "float16"}


class MapWarning(UserWarning):
    """Something about a map was repaired or is unusual; the map is still used."""


def _warn(msg: str, sink: list[str] | None) -> None:
    if sink is not None:
        sink.append(msg)
    else:
        _warnings.warn(msg, MapWarning, stacklevel=3)


def _fmt_vec(v, digits: int = 3) -> str:
    return "(" + ", ".join(f"{float(x):.{digits}f}" for x in v) + ")"


def _fmt_voxel(vs) -> str:
    vs = np.asarray(vs, float)
    if np.allclose(vs, vs[0], rtol=1e-4):
        return f"{vs[0]:.3g} A"
    return " x ".join(f"{v:.3g}" for v in vs) + " A"


@dataclass(repr=False)
class MapGrid:
    """A density map on a regular, axis-aligned grid.

    ``data`` [nz, ny, nx] float32; ``voxel_size`` [3] and ``origin`` [3] are (x, y, z)
    Angstrom; voxel (k, j, i) sits at ``origin + (i, j, k) * voxel_size``.
    """

    data: np.ndarray
    voxel_size: np.ndarray
    origin: np.ndarray

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data, dtype=np.float32)
        if self.data.ndim != 3:
            raise MapError(f"map data must be 3D [nz, ny, nx], got shape {self.data.shape}")
        self.voxel_size = np.broadcast_to(np.asarray(self.voxel_size, np.float64), (3,)).copy()
        self.origin = np.broadcast_to(np.asarray(self.origin, np.float64), (3,)).copy()
        if not (np.all(np.isfinite(self.voxel_size)) and np.all(self.voxel_size > 0)):
            raise MapError(f"voxel size must be positive, got {_fmt_vec(self.voxel_size)} A")
        if not np.all(np.isfinite(self.origin)):
            raise MapError(f"map origin must be finite, got {self.origin.tolist()}")

    def __repr__(self) -> str:
        nz, ny, nx = self.shape
        return (f"MapGrid({nx}x{ny}x{nz} voxels (x, y, z), voxel size "
                f"{_fmt_vec(self.voxel_size)} A, origin {_fmt_vec(self.origin)} A)")

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(nz, ny, nx)``, the shape of ``data``."""
        return tuple(int(s) for s in self.data.shape)

    @property
    def shape_xyz(self) -> np.ndarray:
        """``[nx, ny, nz]``."""
        return np.array(self.data.shape[::-1], np.int64)

    def xyz_to_ijk(self, xyz) -> np.ndarray:
        """Fractional voxel indices ``[N, 3]`` in (i, j, k) = (x, y, z) order."""
        return (np.asarray(xyz, np.float64) - self.origin) / self.voxel_size

    def ijk_to_xyz(self, ijk) -> np.ndarray:
        """Angstrom positions ``[N, 3]`` of (fractional) voxel indices (i, j, k)."""
        return np.asarray(ijk, np.float64) * self.voxel_size + self.origin

    @property
    def extent(self) -> np.ndarray:
        """``[[xmin, ymin, zmin], [xmax, ymax, zmax]]``: centres of the first and last voxel."""
        return np.stack([self.origin, self.origin + (self.shape_xyz - 1) * self.voxel_size])

    def copy(self) -> MapGrid:
        return MapGrid(self.data.copy(), self.voxel_size.copy(), self.origin.copy())


# --------------------------------------------------------------------------- reading


def _peek_header(path: Path) -> tuple[bytes, bool]:
    """First 1024 bytes (decompressed) and whether the file is compressed."""
    try:
        with open(path, "rb") as f:
            magic = f.read(3)
    except OSError as exc:
        raise MapError(f"cannot read {path}: {exc}") from exc
    if magic[:2] == b"\x1f\x8b":
        import gzip

        opener = gzip.open
    elif magic == b"BZh":
        import bz2

        opener = bz2.open
    else:
        opener = open
    try:
        with opener(path, "rb") as f:
            return f.read(1024), opener is not open
    except (OSError, EOFError, ValueError) as exc:
        raise MapError(f"cannot read {path}: damaged compressed file ({exc})") from exc


def _check_plausible_header(path: Path) -> None:
    """Refuse files that cannot be MRC/CCP4 before mrcfile tries to read them (its
    permissive mode may otherwise try to read gigabytes of nonsense)."""
    head, compressed = _peek_header(path)
    if len(head) < 1024:
        raise MapError(f"{path} is not an MRC/CCP4 map file (only {len(head)} bytes, "
                       "shorter than an MRC header)")
    if head[208:212] == b"MAP ":
        return
    size = None if compressed else path.stat().st_size
    for order in "<>":
        nx, ny, nz, mode = np.frombuffer(head[:16], dtype=f"{order}i4")
        nsymbt = int(np.frombuffer(head[92:96], dtype=f"{order}i4")[0])
        if not (0 < nx < 1 << 20 and 0 < ny < 1 << 20 and 0 < nz < 1 << 20):
            continue
        if int(mode) not in _VALID_MODES or nsymbt < 0:
            continue
        itemsize = {0: 1, 1: 2, 2: 4, 6: 2, 12: 2}[int(mode)]
        if size is None or 1024 + nsymbt + int(nx) * int(ny) * int(nz) * itemsize <= size:
            return
    raise MapError(f"{path} is not an MRC/CCP4 map file (no 'MAP ' stamp and no "
                   "plausible old-style header)")


def _open_mrc(path: Path, sink: list[str] | None):
    """(header copy, data array in file order or None)."""
    import mrcfile

    _check_plausible_header(path)

    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        # Not about this file: other objects garbage-collected meanwhile (unclosed files),
        # and the libraries' own notices (mrcfile 1.5.4 under NumPy 2.5 warns that
        # setting an array's dtype is deprecated on every map it reads).
        for category in (ResourceWarning, DeprecationWarning, PendingDeprecationWarning,
                         FutureWarning):
            _warnings.simplefilter("ignore", category)
        strict_error = None
        try:
            try:
                mrc = mrcfile.open(str(path), mode="r", permissive=False)
            except ValueError as exc:
                strict_error = str(exc)
                mrc = mrcfile.open(str(path), mode="r", permissive=True)
            with mrc:
                header = mrc.header.copy()
                data = mrc.data  # read into memory (not mapped), valid after close
        except (ValueError, OSError, EOFError, OverflowError, MemoryError) as exc:
            raise MapError(f"cannot read {path} as an MRC/CCP4 map: {exc}") from exc
    messages = [m for m in dict.fromkeys(str(w.message) for w in caught) if m != strict_error]
    if data is not None and (strict_error or messages):
        _warn(f"{path.name}: header problems ({'; '.join(([strict_error] if strict_error else []) + messages)}); "
              "read it anyway", sink)
    if data is None:
        why = "; ".join(([strict_error] if strict_error else []) + messages) or "no data"
        if bytes(header.map) != b"MAP ":
            raise MapError(f"{path} is not an MRC/CCP4 map file ({why})")
        raise MapError(f"{path}: the MRC header does not match the data, the file may be "
                       f"truncated or corrupt ({why})")
    return header, data


def _axis_permutation(header, path: Path, sink) -> tuple[int, int, int]:
    """(xyz axis of columns, of rows, of sections), 0-based."""
    crs = (int(header.mapc), int(header.mapr), int(header.maps))
    if sorted(crs) != [1, 2, 3]:
        _warn(f"{path.name}: invalid axis order MAPC/MAPR/MAPS = {crs}; assuming 1, 2, 3", sink)
        return (0, 1, 2)
    return (crs[0] - 1, crs[1] - 1, crs[2] - 1)


def _mode0_unsigned(header) -> bool:
    if bytes(header.map) != b"MAP ":
        return True  # pre-2000 MRC: bytes were unsigned
    raw = bytes(header.extra2)[40:48]
    stamp, flags = np.frombuffer(raw, dtype=header.mode.dtype)
    return int(stamp) == _IMOD_STAMP and (int(flags) & 1) == 0


def read_map(path: str | os.PathLike, warnings: list[str] | None = None) -> MapGrid:
    """Read an MRC/CCP4 map (``.mrc``, ``.map``, ``.ccp4``, gzipped or not) as a :class:`MapGrid`.

    See the module docstring for the header conventions. User problems raise
    :class:`MapError`; repairs are reported through ``warnings`` (list) or as
    :class:`MapWarning`.
    """
    path = Path(path)
    if not path.exists():
        raise MapError(f"map file not found: {path}")
    if path.is_dir():
        raise MapError(f"{path} is a folder, not a map file")
    if path.stat().st_size == 0:
        raise MapError(f"map file {path} is empty (0 bytes)")
    header, raw = _open_mrc(path, warnings)

    mode = int(header.mode)
    if mode not in _VALID_MODES:
        kind = {3: "complex int16 (Fourier)", 4: "complex float32 (Fourier)",
                101: "4-bit"}.get(mode, "unknown")
        raise MapError(f"{path}: MRC data mode {mode} ({kind}) is not supported; "
                       "save the map as 32-bit float (mode 2)")
    n_crs = (int(header.nx), int(header.ny), int(header.nz))
    if min(n_crs) <= 0 or raw.size == 0:
        raise MapError(f"{path}: the map is empty ({n_crs[0]}x{n_crs[1]}x{n_crs[2]} voxels)")
    ispg = int(header.ispg)
    m_xyz = np.array([int(header.mx), int(header.my), int(header.mz)])
    if raw.ndim == 4:
        raise MapError(f"{path} is a stack of {raw.shape[0]} volumes (ISPG {ispg}), not a "
                       "single map; extract one volume first")
    if raw.ndim == 2 or n_crs[2] == 1:
        raise MapError(f"{path} holds a single 2D image ({n_crs[0]}x{n_crs[1]} pixels, "
                       "nz = 1), not a 3D map")
    if ispg == 0 and (m_xyz[2] == 1 or path.name.lower().endswith((".mrcs", ".mrcs.gz"))):
        raise MapError(f"{path} is an image stack ({n_crs[2]} 2D images of "
                       f"{n_crs[0]}x{n_crs[1]} pixels; ISPG 0, MZ {m_xyz[2]}), not a 3D map")
    if 401 <= ispg <= 630 and 0 < m_xyz[2] < n_crs[2]:
        raise MapError(f"{path} is a stack of {n_crs[2] // m_xyz[2]} volumes (ISPG {ispg}), "
                       "not a single map; extract one volume first")
    if min(n_crs) < 2:
        raise MapError(f"{path}: a map must be at least 2 voxels thick along every axis, "
                       f"got {n_crs[0]}x{n_crs[1]}x{n_crs[2]}")

    crs_to_xyz = _axis_permutation(header, path, warnings)

    # Voxel size (x, y, z) from the cell lengths and samplings.
    cell = np.array([float(header.cella.x), float(header.cella.y), float(header.cella.z)])
    if not (np.all(m_xyz > 0) and np.all(np.isfinite(cell)) and np.all(cell > 0)):
        raise MapError(
            f"{path}: the header gives no valid voxel size (cell {_fmt_vec(cell)} A, "
            f"MX/MY/MZ {tuple(int(m) for m in m_xyz)}); set the voxel size (e.g. ChimeraX "
            "'volume #1 voxelSize 1.1') and save the map again")
    voxel_size = cell / m_xyz
    angles = np.array([float(header.cellb.alpha), float(header.cellb.beta),
                       float(header.cellb.gamma)])
    valid_angles = np.all((angles > 0) & (angles < 180)) and angles.sum() < 360
    if valid_angles and np.any(np.abs(angles - 90) > 0.01):
        raise MapError(f"{path}: non-orthogonal cell (angles {_fmt_vec(angles, 2)}) is not "
                       "supported; cryo-EM maps need 90 degree angles")

    # Data [sections, rows, columns] -> [z, y, x].
    if mode == 0 and _mode0_unsigned(header):
        raw = raw.view(np.uint8)
    arr_xyz = (crs_to_xyz[2], crs_to_xyz[1], crs_to_xyz[0])  # xyz axis of each array axis
    perm = [arr_xyz.index(2 - a) for a in range(3)]
    data = np.array(raw.transpose(perm), dtype=np.float32, order="C")  # own, writable copy

    origin = _origin(header, crs_to_xyz, voxel_size, data.shape[::-1], m_xyz, path, warnings)

    finite = np.isfinite(data)
    n_bad = int(data.size - np.count_nonzero(finite))
    if n_bad:
        frac = n_bad / data.size
        if n_bad == data.size:
            raise MapError(f"{path}: every voxel is NaN or infinite")
        if frac > MAX_NONFINITE_FRACTION:
            raise MapError(f"{path}: {n_bad} voxels ({100 * frac:.2g}%) are NaN or infinite; "
                           "the map is damaged")
        fill = float(np.median(data[finite]))
        data[~finite] = fill
        _warn(f"{path.name}: {n_bad} NaN/infinite voxels replaced by the median {fill:.4g}",
              warnings)
    lo, hi = float(data.min()), float(data.max())
    if lo == hi:
        raise MapError(f"{path}: every voxel has the same value ({lo:g}); the map is empty")
    return MapGrid(data, voxel_size, origin)


def _origin(header, crs_to_xyz, voxel_size, n_xyz, m_xyz, path: Path, sink) -> np.ndarray:
    start_crs = (int(header.nxstart), int(header.nystart), int(header.nzstart))
    start = np.zeros(3)
    for file_axis, xyz_axis in enumerate(crs_to_xyz):
        start[xyz_axis] = start_crs[file_axis]
    field = np.array([float(header.origin.x), float(header.origin.y), float(header.origin.z)])
    if bytes(header.map) == b"MAP " and np.any(field != 0):
        usable = np.all(np.isfinite(field)) and all(
            np.float32(o) + np.float32(s) != np.float32(o) for o, s in zip(field, voxel_size))
        if usable:
            if np.any(start != 0):
                _warn(f"{path.name}: header has both ORIGIN {_fmt_vec(field)} A and "
                      f"N*START {tuple(int(s) for s in start)}; using ORIGIN (as ChimeraX does)",
                      sink)
            return field
        _warn(f"{path.name}: ignoring unusable ORIGIN field {field.tolist()}", sink)
    limit = 10 * max(int(np.max(m_xyz)), int(np.max(n_xyz)))
    if np.any(np.abs(start) > limit):
        _warn(f"{path.name}: N*START {tuple(int(s) for s in start)} look uninitialised; "
              "using origin 0", sink)
        return np.zeros(3)
    return start * voxel_size


# --------------------------------------------------------------------------- writing


def write_map(path: str | os.PathLike, grid: MapGrid, overwrite: bool = False) -> None:
    """Write ``grid`` as a float32 MRC2014 map (gzipped if the name ends in ``.gz``).

    The origin goes into the ORIGIN field (N*START = 0), axis order 1, 2, 3, ISPG 1.
    An existing file is refused (:class:`OutputError`) unless ``overwrite``. The file is
    written next to its destination and moved into place, so a failed write leaves no
    half-written map.
    """
    import mrcfile

    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; choose another name or allow overwriting")
    if path.is_dir():
        raise OutputError(f"{path} is a folder")
    if not path.parent.is_dir():
        raise OutputError(f"folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    compression = "gzip" if path.name.lower().endswith(".gz") else None
    try:
        with mrcfile.new(str(tmp), overwrite=True, compression=compression) as mrc:
            mrc.set_data(np.ascontiguousarray(grid.data, dtype=np.float32))
            mrc.voxel_size = tuple(float(v) for v in grid.voxel_size)
            mrc.header.origin.x, mrc.header.origin.y, mrc.header.origin.z = (
                float(v) for v in grid.origin)
            mrc.header.nxstart = mrc.header.nystart = mrc.header.nzstart = 0
            mrc.header.ispg = 1
            mrc.update_header_stats()
            mrc.add_label("ChimeraX-ModelAngelo")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write map {path}: {exc}") from exc


# --------------------------------------------------------------------------- resampling


def resample_shape(grid: MapGrid, voxel_size: float = 1.5) -> tuple[int, int, int]:
    """``(nz, ny, nx)`` of ``resample(grid, voxel_size)`` without resampling."""
    if not (voxel_size > 0 and math.isfinite(voxel_size)):
        raise MapError(f"voxel size must be positive, got {voxel_size}")
    n_xyz = [int(math.floor((n - 1) * v / voxel_size + 1e-6)) + 1
             for n, v in zip(grid.shape_xyz, grid.voxel_size)]
    return (n_xyz[2], n_xyz[1], n_xyz[0])


def resample(grid: MapGrid, voxel_size: float = 1.5, method: str = "fourier") -> MapGrid:
    """``grid`` on cubic voxels of ``voxel_size`` A covering the same region.

    The new grid starts at the same origin (centre of the first voxel) and has as many
    voxels per axis as fit up to the centre of the last input voxel, so every output
    voxel lies inside the input. Methods (both separable, one axis at a time; input
    voxels may differ per axis):

    * ``"fourier"``: band-limited (trigonometric) interpolation. Along each axis the
      samples are treated as one period of a periodic signal, after appending a linear
      ramp from the last sample back to the first (``max(8, n // 8)`` samples) so the
      periodic continuation has no jump; frequencies above the output Nyquist
      (``1 / (2 voxel_size)``, when it is below the input's) are removed with a sharp
      cut (half weight exactly at the cut), which is exactly what cropping the FFT does,
      and the resulting Fourier series is evaluated at the new voxel centres. Unlike FFT
      crop/pad this does not need the box length to be a multiple of the new voxel size:
      the series is evaluated by a ``[n_out, n_in]`` matrix product per axis.
    * ``"trilinear"``: linear interpolation along each axis, identical to
      ``scipy.ndimage.map_coordinates(order=1)`` at the new voxel centres. No
      anti-aliasing filter: use it for upsampling or small changes.
    """
    shape = resample_shape(grid, voxel_size)
    v_out = np.full(3, float(voxel_size))
    if method not in ("fourier", "trilinear"):
        raise MapError(f"unknown resampling method {method!r}: use 'fourier' or 'trilinear'")
    if np.allclose(grid.voxel_size, v_out, rtol=1e-6, atol=0):
        return MapGrid(grid.data.copy(), v_out, grid.origin.copy())
    positions = [np.arange(n) * v_out[a] / grid.voxel_size[a]
                 for a, n in enumerate(shape[::-1])]
    data = _resample_separable(grid.data, positions, grid.voxel_size, v_out, method)
    return MapGrid(data, v_out, grid.origin.copy())


def resample_to(grid: MapGrid, like: MapGrid, method: str = "fourier") -> MapGrid:
    """``grid`` resampled onto the lattice of ``like`` (its origin, voxel size and shape).

    ``like`` must be axis-aligned with ``grid`` (all MapGrids are). Voxels of ``like``
    outside ``grid`` are 0. Same methods as :func:`resample`.
    """
    positions = [(like.origin[a] + np.arange(like.shape_xyz[a]) * like.voxel_size[a]
                  - grid.origin[a]) / grid.voxel_size[a] for a in range(3)]
    data = _resample_separable(grid.data, positions, grid.voxel_size, like.voxel_size,
                               method)
    return MapGrid(data, like.voxel_size.copy(), like.origin.copy())


def _resample_separable(data: np.ndarray, positions: list[np.ndarray], v_in: np.ndarray,
                        v_out: np.ndarray, method: str) -> np.ndarray:
    """Resample ``data`` [z, y, x]; ``positions[a]`` are output sample positions along
    xyz axis ``a`` in input voxel units."""
    if method not in ("fourier", "trilinear"):
        raise MapError(f"unknown resampling method {method!r}: use 'fourier' or 'trilinear'")
    out = data.astype(np.float32, copy=False)
    # Shrink the most-shrinking axes first: later passes then touch fewer voxels.
    order = sorted(range(3), key=lambda a: len(positions[a]) / data.shape[2 - a])
    for a in order:
        ax = 2 - a
        pos = np.asarray(positions[a], np.float64)
        if method == "trilinear":
            out = _linear_axis(out, ax, pos)
        else:
            cutoff = min(0.5, 0.5 * float(v_in[a]) / float(v_out[a]))  # cycles per voxel
            out = _fourier_axis(out, ax, pos, cutoff)
    return np.ascontiguousarray(out, dtype=np.float32)


def _inside(pos: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask of positions inside [0, n-1] within tolerance, positions clipped into it)."""
    ok = (pos >= -_EDGE_TOL) & (pos <= n - 1 + _EDGE_TOL)
    return ok, np.clip(pos, 0, n - 1)


def _linear_axis(data: np.ndarray, ax: int, pos: np.ndarray) -> np.ndarray:
    n = data.shape[ax]
    ok, p = _inside(pos, n)
    i0 = np.minimum(np.floor(p).astype(np.int64), max(n - 2, 0))
    i1 = np.minimum(i0 + 1, n - 1)
    w1 = (p - i0).astype(np.float32)
    w0 = (1 - w1) * ok
    w1 = w1 * ok
    shape = [1, 1, 1]
    shape[ax] = len(pos)
    return (np.take(data, i0, axis=ax) * w0.reshape(shape)
            + np.take(data, i1, axis=ax) * w1.reshape(shape))


def _band_limited_matrix(n: int, pos: np.ndarray, cutoff: float) -> np.ndarray:
    """``M [len(pos), n]``: evaluates the Fourier series of ``n`` periodic samples, keeping
    frequencies ``|k| / n < cutoff`` (``cutoff`` in cycles per sample; half weight at
    equality), at fractional sample positions ``pos``.

    ``M[m, p] = (1/n) * sum_k w_k cos(2 pi k (pos[m] - p) / n)``, summed in closed form:
    ``sum_{|k| <= K} cos(k t) = sin((K + 1/2) t) / sin(t / 2)``.
    """
    c = min(cutoff * n, n / 2)  # cut-off in integer frequency units
    kc = round(c)
    if abs(c - kc) < 1e-6:
        k_full, k_half = kc - 1, kc
    else:
        k_full, k_half = math.floor(c), None
    t = 2 * np.pi * (pos[:, None] - np.arange(n)[None, :]) / n  # [n_out, n]
    s = np.sin(t / 2)
    small = np.abs(s) < 1e-9
    m = np.where(small, 2 * k_full + 1, np.sin((k_full + 0.5) * t) / np.where(small, 1, s))
    if k_half is not None and k_half > 0:
        m += np.cos(k_half * t)
    return m / n


def _fourier_axis(data: np.ndarray, ax: int, pos: np.ndarray, cutoff: float) -> np.ndarray:
    n = data.shape[ax]
    ok, p = _inside(pos, n)
    pad = max(8, n // 8)
    a = np.moveaxis(data, ax, -1)
    first, last = a[..., :1], a[..., -1:]
    ramp = (np.arange(1, pad + 1, dtype=np.float32) / (pad + 1))  # [pad]
    a = np.concatenate([a, last + (first - last) * ramp], axis=-1)  # [..., n + pad]
    mat = _band_limited_matrix(n + pad, p, cutoff) * ok[:, None]  # [n_out, n + pad]
    lead = a.shape[:-1]
    out = a.reshape(-1, n + pad) @ mat.T.astype(np.float32)  # [rows, n_out]
    return np.moveaxis(out.reshape(lead + (len(pos),)), -1, ax)


# --------------------------------------------------------------------------- sampling


def interpolate(grid: MapGrid, xyz) -> np.ndarray:
    """Trilinear density ``[N]`` at Angstrom positions ``xyz [N, 3]``; 0 outside the grid."""
    from scipy import ndimage

    xyz = np.asarray(xyz, np.float64).reshape(-1, 3)
    ijk = grid.xyz_to_ijk(xyz)
    n = grid.shape_xyz
    near = (ijk > -_EDGE_TOL) & (ijk < n - 1 + _EDGE_TOL)
    ijk = np.where(near, np.clip(ijk, 0, n - 1), ijk)
    coords = ijk[:, ::-1].T  # [3, N] (k, j, i)
    return ndimage.map_coordinates(grid.data, coords, order=1, mode="constant", cval=0.0,
                                   prefilter=False).astype(np.float32)


# --------------------------------------------------------------------------- normalisation


def normalise(grid: MapGrid, warnings: list[str] | None = None) -> MapGrid:
    """A copy of ``grid`` scaled so that maps of any scale and sign convention compare.

    1. Solvent level = median of all voxels (most of a cryo-EM box is solvent; for masked
       maps it is the masked-out value); it is subtracted.
    2. Sign: protein adds density on one side only, so a protein map is strongly skewed
       (skewness +2.7 to +4.3 on the EMDB test maps). If the skewness is below -0.5 *and*
       the 0.1th percentile lies more than 1.1 times further from the solvent level than
       the 99.9th, the protein is taken to be dark and the map is multiplied by -1 (with
       a warning). Both tests must agree, so neither a few outliers nor a featureless
       (symmetric) map cause a flip.
    3. Solvent noise sigma = RMS of the voxels below the solvent level (protein adds only
       positive density, so the negative half is noise and ripples). Voxels above
       ``3 sigma`` are "non-solvent"; the map is divided by their 99th percentile. This
       scale ignores how much empty box surrounds the molecule and whether the map was
       masked (fewer than 100 such voxels: the 99.9th percentile of ``|density|``).

    After it: solvent ~ 0, the densest 1% of the molecule at >= 1; on the three EMDB test
    maps the mean density at the deposited C-alpha atoms is 0.5-0.8. Statistics use at
    most 2**22 voxels (a fixed pseudo-random sample of larger maps). Raises :class:`MapError` for a map without contrast.
    """
    data = grid.data
    flat = data.reshape(-1)
    if flat.size > _STATS_SAMPLE:
        idx = np.random.default_rng(0).integers(0, flat.size, _STATS_SAMPLE)
        sample = flat[idx].astype(np.float64)
    else:
        sample = flat.astype(np.float64)
    level = float(np.median(sample))
    x = sample - level
    lo, hi = np.percentile(x, [0.1, 99.9])
    sign = 1.0
    xm = x - x.mean()
    var = float(np.mean(xm**2))
    if not var > 0:
        raise MapError("the map has no contrast (all voxels have the same value)")
    skew = float(np.mean(xm**3)) / var**1.5
    if skew < -_FLIP_SKEW and -lo > _FLIP_TAIL_RATIO * hi:
        sign = -1.0
        x = -x
        _warn("the map's density looks inverted (protein darker than solvent); it was "
              "multiplied by -1", warnings)
    neg = x[x < 0]
    sigma = float(np.sqrt(np.mean(neg**2))) if neg.size else 0.0
    signal = x[x > 3 * sigma]
    if signal.size >= 100:
        scale = float(np.percentile(signal, 99))
    else:
        scale = float(np.percentile(np.abs(x), 99.9)) or float(np.max(np.abs(x)))
    if not (scale > 0 and math.isfinite(scale)):
        raise MapError("the map has no contrast (all voxels at the solvent level)")
    out = (data - np.float32(level)) * np.float32(sign / scale)
    return MapGrid(out.astype(np.float32, copy=False), grid.voxel_size.copy(),
                   grid.origin.copy())


# --------------------------------------------------------------------------- sharpening


def _s2_rfft(shape: tuple[int, int, int], voxel: float) -> np.ndarray:
    """|s|^2 (1/A^2) on the half-spectrum of ``np.fft.rfftn`` for a ``[z, y, x]`` grid."""
    fz = np.fft.fftfreq(shape[0], voxel)[:, None, None]
    fy = np.fft.fftfreq(shape[1], voxel)[None, :, None]
    fx = np.fft.rfftfreq(shape[2], voxel)[None, None, :]
    return (fz**2 + fy**2 + fx**2).astype(np.float32)  # [nz, ny, nx//2+1]


def guinier_b(grid: MapGrid, low: float = 10.0, high: float = 4.0,
              shells: int = 12) -> float | None:
    """The map's overall B-factor (A^2): the Guinier slope of its amplitudes.

    Mean squared amplitude in ``shells`` shells equally spaced in ``s^2`` between 1/``low``
    and 1/``high`` A^-1; ``ln|F| = c - B s^2 / 4`` fitted by least squares. Blurred maps
    give large B; noise beyond the resolution flattens the slope (smaller B). None when
    the grid is too coarse or too small to have those shells (``high`` below Nyquist, or a
    shell without coefficients). Cubic voxels only (the working grid).
    """
    voxel = float(grid.voxel_size[0])
    if high < 2 * voxel or min(grid.data.shape) < 4:
        return None
    d = grid.data.astype(np.float32) - np.float32(grid.data.mean())
    power = np.abs(np.fft.rfftn(d)) ** 2  # [nz, ny, nx//2+1]
    s2 = _s2_rfft(d.shape, voxel)
    edges = np.linspace(1 / low**2, 1 / high**2, shells + 1)
    idx = np.digitize(s2.ravel(), edges)  # 1..shells inside the range
    counts = np.bincount(idx, minlength=shells + 2)[1:shells + 1]
    if (counts == 0).any():
        return None
    mean_power = np.bincount(idx, power.ravel(), minlength=shells + 2)[1:shells + 1] / counts
    if not (mean_power > 0).all():
        return None
    x = 0.5 * (edges[1:] + edges[:-1])
    slope = np.polyfit(x, 0.5 * np.log(mean_power), 1)[0]
    return float(-4.0 * slope)


def apply_b_factor(grid: MapGrid, b: float) -> MapGrid:
    """A copy of ``grid`` multiplied by ``exp(-b s^2 / 4)`` in Fourier space: ``b > 0``
    blurs, ``b < 0`` sharpens (cubic voxels)."""
    data = grid.data.astype(np.float32)
    ft = np.fft.rfftn(data)
    ft *= np.exp(-np.float32(b) * _s2_rfft(data.shape, float(grid.voxel_size[0])) / 4)
    out = np.fft.irfftn(ft, s=data.shape).astype(np.float32)
    return MapGrid(out, grid.voxel_size.copy(), grid.origin.copy())


def auto_sharpen(grid: MapGrid, target_b: float, max_sharpen: float,
                 warnings: list[str] | None = None) -> tuple[MapGrid, float]:
    """Sharpen ``grid`` so its :func:`guinier_b` falls to ``target_b``, by at most
    ``max_sharpen`` A^2; a map already at or below the target is returned unchanged.
    Returns the (re-:func:`normalise`-d) map and the B applied (<= 0)."""
    b = guinier_b(grid)
    if b is None or b <= target_b:
        return grid, 0.0
    applied = -min(b - target_b, max_sharpen)
    return normalise(apply_b_factor(grid, applied), warnings), applied


# --------------------------------------------------------------------------- size


def crop_to_region(grid: MapGrid, xyz_min, xyz_max, pad: float = 0.0) -> MapGrid:
    """The voxels whose centres lie in the box ``[xyz_min - pad, xyz_max + pad]`` (A).

    The box is clipped to the map; a box that misses the map raises :class:`MapError`.
    The data are copied.
    """
    lo_xyz = np.asarray(xyz_min, np.float64) - pad
    hi_xyz = np.asarray(xyz_max, np.float64) + pad
    if lo_xyz.shape != (3,) or hi_xyz.shape != (3,) or np.any(hi_xyz < lo_xyz):
        raise MapError(f"invalid crop box {lo_xyz.tolist()} .. {hi_xyz.tolist()}")
    lo = np.maximum(np.ceil(grid.xyz_to_ijk(lo_xyz) - _EDGE_TOL).astype(np.int64), 0)
    hi = np.minimum(np.floor(grid.xyz_to_ijk(hi_xyz) + _EDGE_TOL).astype(np.int64),
                    grid.shape_xyz - 1)
    if np.any(hi < lo):
        ext = grid.extent
        raise MapError(f"the region {_fmt_vec(lo_xyz, 1)} - {_fmt_vec(hi_xyz, 1)} A does "
                       f"not overlap the map ({_fmt_vec(ext[0], 1)} - {_fmt_vec(ext[1], 1)} A)")
    data = grid.data[lo[2]:hi[2] + 1, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1].copy()
    return MapGrid(data, grid.voxel_size.copy(), grid.ijk_to_xyz(lo))


def check_size(grid: MapGrid, max_voxels: int | None = None,
               voxel_size: float | None = None) -> None:
    """Raise :class:`MapError` if ``grid`` has more than ``max_voxels`` voxels.

    With ``voxel_size`` the check is on the shape ``grid`` would have after
    :func:`resample` to that voxel size (so a huge map can be refused before resampling).
    ``max_voxels`` defaults to ``MapConfig.max_voxels``.
    """
    if max_voxels is None:
        from .config import MapConfig

        max_voxels = MapConfig().max_voxels
    if voxel_size is None:
        shape, vs = grid.shape, grid.voxel_size
    else:
        shape, vs = resample_shape(grid, voxel_size), np.full(3, float(voxel_size))
    n = int(np.prod(shape, dtype=np.int64))
    if n > max_voxels:
        nz, ny, nx = shape
        raise MapError(
            f"map is {nx}x{ny}x{nz} voxels at {_fmt_voxel(vs)} ({n:,} voxels, the limit is "
            f"{int(max_voxels):,}); crop it to the region of interest or use a mask")
