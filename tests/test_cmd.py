"""``modelangelo build/stop/search`` in a real headless ChimeraX session.

Most tests replace only the network pipeline (``pipeline.run_build``) by a recorder that
writes a real mmCIF file with gemmi, to check the ChimeraX layer exactly: command parsing,
the Volume -> MapGrid conversion (compared with ``mapio.read_map`` on the same file),
where the models land, colouring, threads and stop. ``test_end_to_end_real_pipeline``
runs the real pipeline on the example map.
"""

from __future__ import annotations

import threading
from pathlib import Path

import chimerax_harness as cx
import gemmi
import mrcfile
import numpy as np
import pytest

pytestmark = pytest.mark.chimerax

REPO = Path(__file__).resolve().parents[1]
MAP = REPO / "example" / "emd_2566.mrc"
FASTA = REPO / "example" / "emd_2566.fasta"


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def write_model_cif(path: Path, ca_xyz: np.ndarray, bfactors) -> None:
    """A poly-Ala chain with N, CA, C, O per residue (CA at ``ca_xyz``) as mmCIF."""
    st = gemmi.Structure()
    st.name = path.stem
    model = gemmi.Model("1")
    chain = gemmi.Chain("A")
    offsets = {"N": (-1.2, 0.6, 0.0), "CA": (0.0, 0.0, 0.0), "C": (1.2, 0.6, 0.0),
               "O": (1.3, 1.8, 0.0)}
    for i, (ca, b) in enumerate(zip(ca_xyz, bfactors)):
        res = gemmi.Residue()
        res.name = "ALA"
        res.seqid = gemmi.SeqId(i + 1, " ")
        res.entity_type = gemmi.EntityType.Polymer
        for name, off in offsets.items():
            atom = gemmi.Atom()
            atom.name = name
            atom.element = gemmi.Element(name[0])
            atom.pos = gemmi.Position(*(np.asarray(ca, float) + off))
            atom.b_iso = float(b)
            atom.occ = 1.0
            res.add_atom(atom)
        chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    st.setup_entities()
    st.make_mmcif_document().write_file(str(path))


def ca_trace_in(grid, n: int = 8) -> np.ndarray:
    """``n`` CA positions 3.8 A apart along x, inside ``grid`` (its data frame)."""
    centre = grid.origin + (np.array(grid.data.shape[::-1]) - 1) * grid.voxel_size / 2
    return centre + np.outer(np.arange(n) - n / 2, [3.8, 0.0, 0.0])


class RecordingPipeline:
    """Stands in for ``pipeline.run_build``: records its arguments, writes real files."""

    def __init__(self, *, wait_for_stop: bool = False, error=None):
        self.calls: list[dict] = []
        self.thread = None
        self.wait_for_stop = wait_for_stop
        self.error = error
        self.started = threading.Event()

    def __call__(self, grid, sequences, output_dir, name, *, config=None, device="auto",
                 overwrite=False, progress=None, should_stop=None, log=None):
        from chimerax.modelangelo.errors import JobStopped
        from chimerax.modelangelo.pipeline import BuildResult, prepare_output_dir

        self.thread = threading.current_thread()
        self.calls.append(dict(grid=grid, sequences=sequences, output_dir=Path(output_dir),
                               name=name, device=device, overwrite=overwrite))
        self.started.set()
        if self.error is not None:
            raise self.error
        paths = prepare_output_dir(Path(output_dir), name, overwrite)
        progress("detect", 0.5)
        log("found 8 C-alpha candidates")
        if self.wait_for_stop:
            deadline = threading.Event()
            for _ in range(3000):  # at most 30 s, so a failing test cannot hang the run
                if should_stop():
                    raise JobStopped("stopped by the user during 'detect'")
                deadline.wait(0.01)
        ca = ca_trace_in(grid)
        write_model_cif(paths["unpruned"], ca, np.linspace(20, 95, len(ca)))
        pruned = None
        if sequences:
            write_model_cif(paths["pruned"], ca[:5], np.linspace(40, 95, 5))
            pruned = paths["pruned"]
        summary = {"residues_unpruned": len(ca), "chains_unpruned": 1,
                   "residues_pruned": 5 if pruned else None,
                   "chains_pruned": 1 if pruned else None, "device": "cpu"}
        return BuildResult(paths["unpruned"], pruned, summary, ["a test warning"])


def test_recording_pipeline_has_the_signature_of_run_build():
    """The stand-in must keep matching the real pipeline, or these tests prove nothing."""
    import inspect

    from chimerax.modelangelo.pipeline import run_build

    real = inspect.signature(run_build).parameters
    fake = inspect.signature(RecordingPipeline.__call__).parameters
    assert [(n, p.kind, p.default) for n, p in real.items()] == [
        (n, p.kind, p.default) for n, p in fake.items() if n != "self"]


@pytest.fixture(autouse=True)
def no_leftover_jobs():
    """Stop and wrap up any build a test left running, so the next test starts clean."""
    yield
    from chimerax.modelangelo.cmd import running_jobs

    session = cx.get_session()
    for job in running_jobs(session):
        job.stop()
        if job.thread is not None:
            job.thread.join(30)
        cx.wait_for(job.done.is_set, 5)


@pytest.fixture
def pipeline(monkeypatch):
    from chimerax.modelangelo import pipeline as pipeline_mod

    fake = RecordingPipeline()
    monkeypatch.setattr(pipeline_mod, "run_build", fake)
    return fake


@pytest.fixture
def volume(chimerax_session):
    from chimerax.map import Volume

    cx.run(f"open {MAP}")
    v = chimerax_session.models.list(type=Volume)[0]
    assert v.id == (1,)
    return v


def file_grid(path):
    from chimerax.modelangelo.mapio import read_map

    return read_map(path)


def assert_same_grid(grid, ref):
    assert grid.data.dtype == np.float32
    assert grid.data.shape == ref.data.shape
    np.testing.assert_array_equal(grid.data, ref.data)
    np.testing.assert_allclose(grid.voxel_size, ref.voxel_size, rtol=1e-6)
    np.testing.assert_allclose(grid.origin, ref.origin, atol=1e-4)


# ---------------------------------------------------------------------------------------
# the session and the bundle registration
# ---------------------------------------------------------------------------------------
def test_open_map_gives_volume(volume, chimerax_log):
    with mrcfile.open(MAP, permissive=True) as m:
        nz, ny, nx = m.data.shape
    assert tuple(volume.data.size) == (nx, ny, nz)
    assert volume.full_matrix().shape == (nz, ny, nx)
    assert "Opened emd_2566.mrc as #1" in chimerax_log.text("info")


def test_bundle_registered_from_bundle_info(chimerax_session):
    import xml.etree.ElementTree as ET

    bi = chimerax_session.toolshed.find_bundle("ChimeraX-ModelAngelo", chimerax_session.logger)
    assert bi is not None and bi.package_name == "chimerax.modelangelo"
    xml_commands = {c.text.split(" :: ")[2] for c in ET.parse(REPO / "bundle_info.xml").iter(
        "ChimeraXClassifier") if " :: Command :: " in c.text}
    assert {c.name for c in bi.commands} == xml_commands == {
        "modelangelo build", "modelangelo search", "modelangelo color", "modelangelo install",
        "modelangelo stop"}
    assert [t.name for t in bi.tools] == ["ModelAngelo"]
    assert ("chimerax", "modelangelo", "ui") in bi.packages
    # The help folder ChimeraX finds for the bundle holds our command page.
    assert Path(bi.get_path("docs"), "user", "commands", "modelangelo.html").is_file()


def test_bundle_info_has_what_the_bundle_builder_needs():
    """Elements ChimeraX's bundle builder requires, and the same version as pyproject.toml."""
    import xml.etree.ElementTree as ET

    import tomllib

    root = ET.parse(REPO / "bundle_info.xml").getroot()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert root.get("name") == project["name"] == "ChimeraX-ModelAngelo"
    assert root.get("version") == project["version"]
    assert root.get("package") == "chimerax.modelangelo"
    for tag in ("Author", "Email", "URL", "Synopsis", "Description", "Categories",
                "Classifiers", "Dependencies"):
        assert len(root.findall(tag)) == 1, tag
    deps = {d.get("name") for d in root.iter("Dependency")}
    assert "ChimeraX-Core" in deps
    # PyTorch (and fair-esm, which needs it) go into the managed environment, not into
    # ChimeraX's Python with the bundle; the headless package needs them all
    in_environment_only = {"torch", "fair-esm"}
    headless = {d.split(">")[0].split("=")[0] for d in project["dependencies"]}
    assert headless - in_environment_only <= deps
    assert not deps & in_environment_only and in_environment_only <= headless
    for data_dir in root.iter("DataDir"):
        assert (REPO / "src" / data_dir.text.strip()).is_dir(), data_dir.text


def test_package_imports_without_chimerax():
    """The CLI imports chimerax.modelangelo where ChimeraX is not installed."""
    import subprocess
    import sys

    code = ("import sys, chimerax.modelangelo as m, chimerax.modelangelo.cli; "
            "assert not hasattr(m, 'bundle_api'); assert 'chimerax.core' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_stop_without_build_is_harmless(chimerax_session, chimerax_log):
    assert cx.run("modelangelo stop") == []
    assert "No ModelAngelo build is running" in chimerax_log.text("info")


def test_bad_model_number_is_user_error(volume, pipeline, tmp_path):
    from chimerax.core.errors import UserError

    with pytest.raises(UserError):
        cx.run(f"modelangelo build #5 sequence {FASTA} outputFolder {tmp_path / 'out'}")
    with pytest.raises(UserError):  # ChimeraX's parser checks our EnumOf keywords
        cx.run(f"modelangelo build #1 device tpu outputFolder {tmp_path / 'out'}")
    assert pipeline.calls == []


# ---------------------------------------------------------------------------------------
# modelangelo build: the ChimeraX layer
# ---------------------------------------------------------------------------------------
def test_build_reaches_pipeline_with_file_grid_and_opens_models(volume, pipeline, tmp_path,
                                                                chimerax_session, chimerax_log):
    from chimerax.atomic import AtomicStructure

    from chimerax.modelangelo.sequences import read_fasta

    out = tmp_path / "out"
    job = cx.run(f"modelangelo build #1 sequence {FASTA} device cpu outputFolder {out} "
                 "open both wait true")

    (call,) = pipeline.calls
    assert pipeline.thread is threading.main_thread()  # wait true: no worker thread
    assert_same_grid(call["grid"], file_grid(MAP))
    assert [s.sequence for s in call["sequences"]] == [s.sequence for s in read_fasta(FASTA)]
    assert call["output_dir"] == out and call["name"] == "emd_2566"
    assert call["device"] == "cpu" and call["overwrite"] is False

    assert job.state == "finished"
    structures = chimerax_session.models.list(type=AtomicStructure)
    assert len(structures) == 2 and set(structures) == set(job.structures)
    assert all(s.parent is job.group for s in structures)
    assert job.group.name == "ModelAngelo emd_2566.mrc"
    assert {s.name for s in structures} == {"emd_2566 pruned", "emd_2566 unpruned"}
    assert sorted(s.num_residues for s in structures) == [5, 8]
    info = chimerax_log.text("info")
    assert "ModelAngelo built 8 residues in 1 chains; 5 residues in 1 chains after pruning" in info
    assert "ModelAngelo: found 8 C-alpha candidates" in info
    assert "ModelAngelo: a test warning" in chimerax_log.text("warning")


def test_models_land_on_the_map_after_it_was_moved(volume, pipeline, tmp_path, chimerax_session):
    from chimerax.atomic import AtomicStructure

    cx.run("move x 10 models #1")
    cx.run("turn y 30 models #1")
    assert not volume.scene_position.is_identity()

    job = cx.run(f"modelangelo build #1 outputFolder {tmp_path / 'out'} open unpruned")

    # The pipeline still gets the map in its own (file) frame...
    assert_same_grid(pipeline.calls[0]["grid"], file_grid(MAP))
    # ...and the model is placed where ChimeraX shows that frame.
    (s,) = chimerax_session.models.list(type=AtomicStructure)
    assert job.structures == [s] and s.name == "emd_2566 unpruned"
    ca = s.atoms.filter(s.atoms.names == "CA")
    file_xyz = ca_trace_in(pipeline.calls[0]["grid"])
    np.testing.assert_allclose(ca.coords, file_xyz, atol=1e-3)
    np.testing.assert_allclose(ca.scene_coords, volume.scene_position * file_xyz, atol=1e-3)
    # The density ChimeraX shows under each CA is the file's density at the CA.
    from chimerax.geometry import Place

    np.testing.assert_allclose(volume.interpolated_values(ca.scene_coords, point_xform=Place()),
                               volume.interpolated_values(file_xyz), atol=1e-4)


def test_built_models_survive_a_session_save_and_restore(volume, pipeline, tmp_path,
                                                         chimerax_session):
    from chimerax.atomic import AtomicStructure

    cx.run("move x 5 models #1")
    job = cx.run(f"modelangelo build #1 sequence {FASTA} outputFolder {tmp_path / 'out'}")
    before = {s.name: (s.scene_position, s.atoms.colors.copy()) for s in job.structures}
    cx.run(f"save {tmp_path / 's.cxs'}")
    cx.run("close")
    assert chimerax_session.models.list() == []
    cx.run(f"open {tmp_path / 's.cxs'}")
    after = chimerax_session.models.list(type=AtomicStructure)
    assert {s.name for s in after} == set(before)
    for s in after:
        assert s.parent.name == "ModelAngelo emd_2566.mrc"
        assert s.scene_position == before[s.name][0]
        np.testing.assert_array_equal(s.atoms.colors, before[s.name][1])


def test_full_map_is_used_not_the_displayed_region(volume, pipeline, tmp_path):
    cx.run("volume #1 region 2,3,4,20,30,40 step 2")
    assert tuple(volume.region[2]) == (2, 2, 2)
    cx.run(f"modelangelo build #1 outputFolder {tmp_path / 'out'}")
    assert_same_grid(pipeline.calls[0]["grid"], file_grid(MAP))


def test_permuted_axes_and_start_match_mapio(chimerax_session, pipeline, tmp_path):
    """A map stored z-fastest with a non-zero start: ChimeraX's grid == mapio's grid."""
    path = tmp_path / "permuted.mrc"
    rng = np.random.default_rng(0)
    zyx = rng.normal(size=(12, 10, 8)).astype(np.float32)  # [nz, ny, nx]
    with mrcfile.new(path) as m:
        # columns along z, rows along x, sections along y: stored array [ny, nx, nz]
        m.set_data(np.ascontiguousarray(zyx.transpose(1, 2, 0)))
        m.header.mapc, m.header.mapr, m.header.maps = 3, 1, 2
        m.header.nxstart, m.header.nystart, m.header.nzstart = 5, -3, 7  # c (z), r (x), s (y)
        m.voxel_size = (1.1, 1.2, 1.3)  # cell lengths over mx, my, mz
        m.header.origin = (0.0, 0.0, 0.0)
    ref = file_grid(path)
    np.testing.assert_array_equal(ref.data, zyx)  # mapio's reading, checked independently
    cx.run(f"open {path}")
    from chimerax.map import Volume

    from chimerax.modelangelo.cmd import volume_to_grid

    (v,) = chimerax_session.models.list(type=Volume)
    assert_same_grid(volume_to_grid(v), ref)
    np.testing.assert_allclose(ref.origin, np.array([-3, 7, 5]) * ref.voxel_size, atol=1e-5)


def test_rotated_grid_is_refused(volume, pipeline, tmp_path):
    from chimerax.core.errors import UserError

    volume.data.set_rotation(((0.0, -1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)))
    with pytest.raises(UserError, match="rotated or skewed"):
        cx.run(f"modelangelo build #1 outputFolder {tmp_path / 'out'}")
    assert pipeline.calls == []


def test_mask_multiplies_the_map(chimerax_session, volume, pipeline, tmp_path):
    from chimerax.map import Volume

    ref = file_grid(MAP)
    mask = np.zeros_like(ref.data)
    mask[:, :, : mask.shape[2] // 2] = 1.0  # keep the low-x half
    mask_path = tmp_path / "mask.mrc"
    with mrcfile.new(mask_path) as m:
        m.set_data(mask)
        m.voxel_size = tuple(ref.voxel_size)
        m.header.origin = tuple(ref.origin)
    cx.run(f"open {mask_path}")
    assert len(chimerax_session.models.list(type=Volume)) == 2
    cx.run(f"modelangelo build #1 mask #2 outputFolder {tmp_path / 'out'}")
    grid = pipeline.calls[0]["grid"]
    np.testing.assert_allclose(grid.data, ref.data * mask, atol=1e-4)  # float32 transforms
    assert np.count_nonzero(grid.data) < np.count_nonzero(ref.data)


def test_existing_results_are_never_overwritten(volume, pipeline, tmp_path):
    from chimerax.core.errors import UserError

    out = tmp_path / "out"
    out.mkdir()
    (out / "emd_2566_unpruned.cif").write_text("earlier result\n")
    with pytest.raises(UserError, match="already holds results"):
        cx.run(f"modelangelo build #1 outputFolder {out}")
    assert (out / "emd_2566_unpruned.cif").read_text() == "earlier result\n"
    assert pipeline.calls == []


def test_default_output_folder_is_new_each_time(volume, pipeline, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cx.run("modelangelo build #1")
    cx.run("modelangelo build #1")
    first, second = (c["output_dir"] for c in pipeline.calls)
    assert first != second
    for folder in (first, second):
        assert folder.parent == tmp_path / "Documents" / "ModelAngelo"
        assert folder.name.startswith("emd_2566_")
        assert (folder / "emd_2566_unpruned.cif").is_file()


def test_pipeline_errors_become_user_errors(volume, monkeypatch, tmp_path, chimerax_session):
    from chimerax.core.errors import UserError

    from chimerax.modelangelo import pipeline as pipeline_mod
    from chimerax.modelangelo.errors import MapError

    monkeypatch.setattr(pipeline_mod, "run_build",
                        RecordingPipeline(error=MapError("the map is inverted")))
    with pytest.raises(UserError, match="the map is inverted"):
        cx.run(f"modelangelo build #1 outputFolder {tmp_path / 'out'}")
    with pytest.raises(UserError, match="sequence file"):
        bad = tmp_path / "empty.fasta"
        bad.write_text("")
        cx.run(f"modelangelo build #1 sequence {bad} outputFolder {tmp_path / 'out2'}")
    assert len(chimerax_session.models.list()) == 2  # the map and its surface only


def test_gpu_without_cuda_is_a_user_error_before_anything_runs(volume, pipeline, tmp_path):
    import torch
    from chimerax.core.errors import UserError

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(UserError, match="no CUDA GPU"):
        cx.run(f"modelangelo build #1 device gpu outputFolder {tmp_path / 'out'} wait false")
    assert pipeline.calls == [] and not (tmp_path / "out").exists()


def test_color_bfactor_alphafold_palette(chimerax_session, tmp_path):
    from chimerax.core.colors import BuiltinColormaps

    from chimerax.modelangelo.cmd import open_models

    bfactors = np.array([5.0, 45.0, 60.0, 75.0, 85.0, 99.0])
    path = tmp_path / "model.cif"
    write_model_cif(path, np.outer(np.arange(6), [3.8, 0, 0]), bfactors)
    from chimerax.geometry import translation

    group, (s,) = open_models(chimerax_session, [("model", path)], group_name="g",
                              position=translation((1, 2, 3)))
    from chimerax.atomic import AtomicStructure

    assert isinstance(s, AtomicStructure) and s.parent is group
    np.testing.assert_allclose(s.atoms.bfactors, np.repeat(bfactors, 4), atol=1e-2)
    expected = BuiltinColormaps["alphafold"].interpolated_rgba8(s.atoms.bfactors)
    np.testing.assert_array_equal(s.atoms.colors, expected)
    np.testing.assert_allclose(s.scene_position.origin(), (1, 2, 3))


def test_color_command_restores_confidence_colouring(chimerax_session, tmp_path):
    from chimerax.core.colors import BuiltinColormaps
    from chimerax.core.errors import UserError
    from chimerax.geometry import translation

    from chimerax.modelangelo.cmd import open_models

    with pytest.raises(UserError, match="no ModelAngelo models"):
        cx.run("modelangelo color")
    path = tmp_path / "model.cif"
    write_model_cif(path, np.outer(np.arange(6), [3.8, 0, 0]), np.linspace(10, 95, 6))
    _, (s,) = open_models(chimerax_session, [("model", path)], group_name="ModelAngelo m",
                          position=translation((0, 0, 0)))
    cx.run(f"color {s.atomspec} red")
    assert not np.array_equal(s.atoms.colors,
                              BuiltinColormaps["alphafold"].interpolated_rgba8(s.atoms.bfactors))
    cx.run("modelangelo color")  # all ModelAngelo results
    expected = BuiltinColormaps["alphafold"].interpolated_rgba8(s.atoms.bfactors)
    np.testing.assert_array_equal(s.atoms.colors, expected)
    cx.run(f"color {s.atomspec} blue")
    cx.run(f"modelangelo color {s.atomspec}")  # named structures
    np.testing.assert_array_equal(s.atoms.colors, expected)


# ---------------------------------------------------------------------------------------
# background builds and stop
# ---------------------------------------------------------------------------------------
def test_background_build_opens_results_in_main_thread(volume, pipeline, tmp_path,
                                                       chimerax_session):
    events = []
    job = cx.run(f"modelangelo build #1 sequence {FASTA} outputFolder {tmp_path / 'o'} "
                 "wait false")
    job.add_listener(lambda j, event, data: events.append((event, threading.current_thread())))
    assert cx.wait_for(job.done.is_set, 30)
    assert [e for e, _ in events][-1] == "finished"
    assert pipeline.thread is not threading.main_thread()
    assert job.state == "finished" and len(job.structures) == 2
    assert all(t is threading.main_thread() for _, t in events)
    assert all(not s.deleted for s in job.structures)


def test_stop_command_stops_a_background_build(volume, monkeypatch, tmp_path, chimerax_log):
    from chimerax.modelangelo import pipeline as pipeline_mod
    from chimerax.modelangelo.cmd import running_jobs

    fake = RecordingPipeline(wait_for_stop=True)
    monkeypatch.setattr(pipeline_mod, "run_build", fake)
    job = cx.run(f"modelangelo build #1 outputFolder {tmp_path / 'o'} wait false")
    assert fake.started.wait(10)
    assert running_jobs(volume.session) == [job]
    assert cx.run("modelangelo stop") == [job]
    assert cx.wait_for(job.done.is_set, 10)
    assert job.state == "stopped" and running_jobs(volume.session) == []
    assert "stopped" in chimerax_log.text("info")
    assert job.structures == []


def test_one_build_at_a_time(volume, monkeypatch, tmp_path):
    from chimerax.core.errors import UserError

    from chimerax.modelangelo import pipeline as pipeline_mod

    fake = RecordingPipeline(wait_for_stop=True)
    monkeypatch.setattr(pipeline_mod, "run_build", fake)
    job = cx.run(f"modelangelo build #1 outputFolder {tmp_path / 'a'} wait false")
    assert fake.started.wait(10)
    with pytest.raises(UserError, match="already running"):
        cx.run(f"modelangelo build #1 outputFolder {tmp_path / 'b'} wait false")
    assert len(fake.calls) == 1
    cx.run("modelangelo stop")
    assert cx.wait_for(job.done.is_set, 10) and job.state == "stopped"


def test_map_closed_during_a_background_build(volume, pipeline, tmp_path, chimerax_session):
    from chimerax.atomic import AtomicStructure

    cx.run("move z 7 models #1")
    position = volume.scene_position
    job = cx.run(f"modelangelo build #1 outputFolder {tmp_path / 'c'} wait false")
    cx.run("close #1")  # before the main thread wraps the job up
    assert cx.wait_for(job.done.is_set, 10) and job.state == "finished", job.error
    assert len(chimerax_session.models.list(type=AtomicStructure)) == 1
    assert job.structures[0].scene_position == position


def test_output_names_are_file_safe():
    from chimerax.modelangelo.cmd import output_name

    assert output_name("emd_2566.mrc") == "emd_2566"
    assert output_name("emd 2566 (copy).map.gz") == "emd_2566_copy"
    assert output_name("a/b.ccp4") == "a_b"
    assert output_name("...") == "map"


def test_search_needs_a_no_sequence_build(chimerax_session, tmp_path):
    from chimerax.core.errors import UserError

    (tmp_path / "db.fasta").write_text(">a\nMKV\n")
    with pytest.raises(UserError, match="hmm_profiles"):
        cx.run(f"modelangelo search {tmp_path} database {tmp_path / 'db.fasta'}")


def test_search_finds_the_protein_of_a_profile(chimerax_session, tmp_path, chimerax_log):
    """Profiles as a no-sequence build writes them, searched in a FASTA database."""
    from chimerax.modelangelo.alignment import build_hmm, write_hmm
    from chimerax.modelangelo.residue_constants import RESTYPES
    from chimerax.modelangelo.sequences import read_fasta

    (target,) = read_fasta(FASTA)
    rng = np.random.default_rng(1)
    decoys = ["".join(rng.choice(list(RESTYPES), len(target.sequence))) for _ in range(5)]
    db = tmp_path / "db.fasta"
    db.write_text("".join(f">decoy{i}\n{d}\n" for i, d in enumerate(decoys))
                  + f">{target.name} the target\n{target.sequence}\n")
    build = tmp_path / "build"
    (build / "hmm_profiles").mkdir(parents=True)
    fragment = target.sequence[20:100]  # a built chain covering residues 21-100
    probs = np.full((len(fragment), 20), 0.02)
    probs[np.arange(len(fragment)), [RESTYPES.index(a) for a in fragment]] = 0.62
    write_hmm(build_hmm(probs, "chain_0001"), build / "hmm_profiles" / "chain_0001.hmm")

    ((name, hits),) = cx.run(f"modelangelo search {build} database {db} top 3")
    assert name == "chain_0001"
    assert hits[0].name == target.name and hits[0].evalue < 1e-10
    assert (hits[0].target_from, hits[0].target_to) == (21, 100)
    assert all(h.evalue > 1e-3 for h in hits[1:])
    assert f"chain_0001: 1. {target.name} the target" in chimerax_log.text("info")


# ---------------------------------------------------------------------------------------
# the real pipeline
# ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_end_to_end_real_pipeline(volume, tmp_path, chimerax_session, chimerax_log):
    from chimerax.atomic import AtomicStructure
    from chimerax.core.colors import BuiltinColormaps

    cx.run("move y -15 models #1")
    out = tmp_path / "out"
    job = cx.run(f"modelangelo build #1 sequence {FASTA} device cpu outputFolder {out}")
    assert job.state == "finished", job.error
    assert (out / "emd_2566_unpruned.cif").is_file() and (out / "summary.json").is_file()
    structures = chimerax_session.models.list(type=AtomicStructure)
    assert set(structures) == set(job.structures)
    # both models, on the deposited model (3J6B): their CAs, in the map's data frame (the
    # models sit at the moved map's position), lie on deposited CAs
    assert {s.name for s in structures} == {"emd_2566 pruned", "emd_2566 unpruned"}
    from scipy.spatial import cKDTree

    from chimerax.modelangelo.protein import load_protein

    deposited = load_protein(REPO.parent / "shared" / "data" / "real_maps" / "emd_2566"
                             / "3j6b_deposited.cif")
    tree = cKDTree(deposited.ca)
    on_model = {}
    for s in structures:
        assert s.num_residues > 0
        assert s.position == volume.scene_position
        np.testing.assert_array_equal(
            s.atoms.colors, BuiltinColormaps["alphafold"].interpolated_rgba8(s.atoms.bfactors))
        s_ca = s.atoms.filter(s.atoms.names == "CA").coords
        on_model[s.name] = float(np.mean(tree.query(s_ca)[0] < 3.0))
    assert on_model["emd_2566 pruned"] > 0.9, on_model
    assert on_model["emd_2566 unpruned"] > 0.6, on_model
    # CA atoms sit in the density: mean density under CAs is well above the map's mean.
    ca = structures[-1].atoms.filter(structures[-1].atoms.names == "CA")
    from chimerax.geometry import Place

    under = volume.interpolated_values(ca.scene_coords, point_xform=Place())
    assert under.mean() > volume.full_matrix().mean() + volume.full_matrix().std()
    assert "ModelAngelo built" in chimerax_log.text("info")


# ---------------------------------------------------------------------------------------
# dependencies
# ---------------------------------------------------------------------------------------
def test_missing_packages_are_named_with_the_fix(volume, monkeypatch, tmp_path):
    import importlib.util

    from chimerax.core.errors import UserError

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("torch", "pyhmmer")
                        else real_find_spec(name, *a))
    with pytest.raises(UserError, match=r"torch>=2\.1, pyhmmer>=0\.10.*modelangelo install"):
        cx.run(f"modelangelo build #1 outputFolder {tmp_path / 'out'}")
    assert not (tmp_path / "out").exists()


def test_install_command_runs_pip_in_this_python(chimerax_session, chimerax_log):
    # every requirement is already installed in the test environment: pip's dry run
    # resolves them locally and reports nothing to install
    cx.run("modelangelo install target chimerax dryRun true")
    text = chimerax_log.text("info")
    assert "dry run finished" in text
    assert "Requirement already satisfied: torch" in text


# ---------------------------------------------------------------------------------------
# builds in the managed environment (a real child process)
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def test_venv(tmp_path_factory):
    """A managed environment made from this test venv's Python with its packages
    (system site packages: nothing is downloaded) and the bundle linked in."""
    import sys

    from chimerax.modelangelo import environment

    loc = tmp_path_factory.mktemp("managed") / "venv"
    environment.create_venv(loc, python=sys.executable, system_site_packages=True,
                            with_pip=False, log=lambda line: None)
    environment.install_bundle(loc)
    assert environment.environment_report(loc).ready
    return loc


@pytest.fixture
def managed_venv(test_venv, monkeypatch):
    monkeypatch.setenv("MODELANGELO_VENV", str(test_venv))
    return test_venv


def test_run_in_chooses_where_builds_run(chimerax_session, test_venv, monkeypatch, tmp_path):
    from chimerax.core.errors import UserError

    from chimerax.modelangelo.cmd import where_to_run

    # no managed environment: ChimeraX's Python (which has the packages here)
    monkeypatch.setenv("MODELANGELO_VENV", str(tmp_path / "none"))
    assert where_to_run("auto") is None and where_to_run("chimerax") is None
    with pytest.raises(UserError, match=r"none does not exist: create .*'modelangelo install'"):
        where_to_run("venv")
    # a ready environment: auto takes it
    monkeypatch.setenv("MODELANGELO_VENV", str(test_venv))
    assert where_to_run("auto").location == test_venv
    assert where_to_run("venv").python == test_venv / "bin" / "python"
    assert where_to_run("chimerax") is None


def test_venv_build_opens_the_models_on_the_map(volume, managed_venv, tmp_path,
                                                chimerax_session, chimerax_log):
    """runIn venv: the map as ChimeraX holds it goes to a child process; the models it
    writes open like those of an in-process build (see the tests above)."""
    from chimerax.atomic import AtomicStructure
    from chimerax.core.colors import BuiltinColormaps

    from chimerax.modelangelo.cmd import SubprocessBuildJob, volume_to_grid
    from chimerax.modelangelo.sequences import read_fasta

    cx.run("move x 10 models #1")
    out = tmp_path / "out"
    job = cx.run(f"modelangelo build #1 sequence {FASTA} device cpu outputFolder {out} "
                 "runIn venv wait true")

    assert isinstance(job, SubprocessBuildJob) and job.state == "finished", job.error
    assert job.returncode == 0 and job.process.poll() == 0
    assert job.command[:4] == [str(managed_venv / "bin" / "python"), "-s", "-m",
                               "chimerax.modelangelo"]
    # the inputs the child got: ChimeraX's grid and the parsed sequences
    assert_same_grid(file_grid(out / "emd_2566_input.mrc"), volume_to_grid(volume))
    assert [s.sequence for s in read_fasta(out / "emd_2566_input.fasta")] == [
        s.sequence for s in read_fasta(FASTA)]
    # the models it wrote, opened as an in-process build opens them
    result = job.result
    written = [p for p in (result.pruned_path, result.unpruned_path) if p is not None]
    assert all(p.parent == out and p.is_file() for p in written)
    structures = chimerax_session.models.list(type=AtomicStructure)
    assert len(structures) == len(written) and set(structures) == set(job.structures)
    assert all(s.parent is job.group for s in structures)
    assert job.group.name == "ModelAngelo emd_2566.mrc"
    unpruned = next(s for s in structures if s.name == "emd_2566 unpruned")
    assert unpruned.num_residues == result.summary["residues_unpruned"] > 0
    for s in structures:
        assert s.scene_position == volume.scene_position
        np.testing.assert_array_equal(
            s.atoms.colors, BuiltinColormaps["alphafold"].interpolated_rgba8(s.atoms.bfactors))
    ca = unpruned.atoms.filter(unpruned.atoms.names == "CA")
    st = gemmi.read_structure(str(result.unpruned_path))
    file_ca = [a.pos.tolist() for ch in st[0] for r in ch for a in r if a.name == "CA"]
    np.testing.assert_allclose(ca.coords, file_ca, atol=1e-3)
    # the child's progress and log reached ChimeraX
    info = chimerax_log.text("info")
    assert f"in the environment {managed_venv}" in info
    assert "ModelAngelo: [detect]" in info and "C-alpha candidates" in info
    assert "ModelAngelo built" in info and f"files in {out}" in info
    assert any(m.startswith("ModelAngelo emd_2566: refine") for m in chimerax_log.statuses)


def test_venv_build_in_the_background_and_stop(volume, managed_venv, tmp_path,
                                               chimerax_session, chimerax_log):
    from chimerax.atomic import AtomicStructure

    from chimerax.modelangelo.cmd import running_jobs

    events = []
    job = cx.run(f"modelangelo build #1 sequence {FASTA} device cpu "
                 f"outputFolder {tmp_path / 'o'} runIn venv wait false")
    job.add_listener(lambda j, event, data: events.append((event, data)))
    assert job.thread is not None and running_jobs(chimerax_session) == [job]
    assert cx.wait_for(lambda: any(e == "progress" for e, _ in events), 120)  # it runs
    assert cx.run("modelangelo stop") == [job]
    assert cx.wait_for(job.done.is_set, 30)
    assert job.state == "stopped" and events[-1] == ("finished", "stopped")
    assert job.process.poll() is not None  # the child is gone
    assert job.structures == [] and chimerax_session.models.list(type=AtomicStructure) == []
    assert running_jobs(chimerax_session) == []
    assert "ModelAngelo build of emd_2566 stopped" in chimerax_log.text("info")
    assert chimerax_log.text("error") == ""


def test_venv_build_that_dies_is_a_clear_error(volume, managed_venv, tmp_path,
                                               chimerax_session, chimerax_log):
    """The child killed from outside (e.g. out of memory) while ChimeraX waits for it."""
    from chimerax.atomic import AtomicStructure

    events = []
    job = cx.run(f"modelangelo build #1 device cpu outputFolder {tmp_path / 'o'} "
                 "runIn venv wait false")
    job.add_listener(lambda j, event, data: events.append(event))
    assert cx.wait_for(lambda: "progress" in events, 120)
    job.process.kill()
    assert cx.wait_for(job.done.is_set, 30)
    assert job.state == "failed" and job.returncode != 0
    assert "the build process" in job.error and "exited with status" in job.error
    assert "ModelAngelo build of emd_2566 failed: the build process" in chimerax_log.text(
        "error")
    assert chimerax_session.models.list(type=AtomicStructure) == []


def test_venv_build_user_error_is_a_user_error(volume, managed_venv, tmp_path):
    """An error the child reports (an error event) becomes the command's UserError."""
    import torch
    from chimerax.core.errors import UserError

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(UserError, match="no CUDA GPU"):  # device gpu -> --device cuda
        cx.run(f"modelangelo build #1 device gpu outputFolder {tmp_path / 'o'} "
               "runIn venv wait true")


def test_install_command_updates_and_checks_the_environment(chimerax_session, chimerax_log,
                                                            managed_venv, tmp_path):
    import sys

    # the existing test environment: pip finds everything installed, nothing downloads
    report = cx.run(f"modelangelo install location {managed_venv} python {sys.executable}")
    assert report.ready
    info = chimerax_log.text("info")
    assert "Requirement already satisfied: torch>=2.1" in info
    assert f"the environment {managed_venv} is ready" in info

    chimerax_log.clear()
    check = cx.run("modelangelo install check true")
    assert check["environment"].ready and check["chimerax_missing"] == []
    info = chimerax_log.text("info")
    assert f"environment {managed_venv}: ready" in info
    assert f"builds run in the environment {managed_venv}" in info

    chimerax_log.clear()
    new = tmp_path / "new-env"
    cx.run(f"modelangelo install location {new} dryRun true")
    assert not new.exists()
    assert "would create a Python environment: " in chimerax_log.text("info")
    assert "dry run finished, nothing installed" in chimerax_log.text("info")


@pytest.mark.slow
def test_venv_and_in_process_builds_agree(volume, managed_venv, tmp_path, chimerax_session):
    """The same map built in ChimeraX's Python and in the managed environment."""
    import subprocess

    import torch

    # the same number of CPU threads on both sides (other test modules set this process's
    # to 1), so that floating-point sums, and hence the models, are the same
    child = subprocess.run([str(managed_venv / "bin" / "python"), "-c",
                            "import torch; print(torch.get_num_threads())"],
                           capture_output=True, text=True, timeout=120, check=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(int(child.stdout))
    models = {}
    try:
        for run_in in ("chimerax", "venv"):
            job = cx.run(f"modelangelo build #1 sequence {FASTA} device cpu open unpruned "
                         f"outputFolder {tmp_path / run_in} runIn {run_in}")
            assert job.state == "finished" and job.runs_in == run_in, job.error
            (s,) = job.structures
            models[run_in] = (s.num_residues, s.atoms.coords.copy(),
                              job.result.summary["chains"])
    finally:
        torch.set_num_threads(threads)
    (n1, xyz1, chains1), (n2, xyz2, chains2) = models.values()
    assert n1 == n2 and chains1 == chains2
    np.testing.assert_allclose(xyz1, xyz2, atol=1e-3)
