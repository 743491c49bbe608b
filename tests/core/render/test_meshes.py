"""Meshes for synthetic renders (issue 15): procedural shapes closed and outward wound, every file format read
and normalised the same way, and a meshes folder scanned with every left-out file reported with its reason."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from core.errors import InvalidInput
from core.render.meshes import (
    MESH_SUFFIXES,
    PROCEDURAL_CLASSES,
    Mesh,
    MeshLibrary,
    load_mesh,
    normalise,
    procedural_library,
    procedural_mesh,
    scan_meshes,
)

trimesh = pytest.importorskip("trimesh")

CLASSES = ["background", "box", "can", "ball"]
KINDS = [(kind, variant) for kind in PROCEDURAL_CLASSES for variant in range(3)]


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Volume enclosed by a closed mesh, positive when its faces wind counter-clockwise seen from outside."""
    v = vertices.astype(np.float64)
    return float(np.einsum("ij,ij->i", v[faces[:, 0]], np.cross(v[faces[:, 1]], v[faces[:, 2]])).sum() / 6.0)


def components(faces: np.ndarray) -> list[np.ndarray]:
    """Faces of each connected part (vertex-sharing), as index arrays into ``faces``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = int(faces.max()) + 1
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    part = label[faces[:, 0]]
    return [np.flatnonzero(part == p) for p in np.unique(part)]


def box_file(path, size=(2.0, 1.0, 0.5), offset=(0.0, 0.0, 0.0)):
    """Write a box mesh with trimesh to ``path`` (format from the suffix); return the trimesh object."""
    mesh = trimesh.creation.box(extents=size)
    mesh.apply_translation(offset)
    mesh.export(str(path))
    return mesh


def bounds(vertices: np.ndarray) -> np.ndarray:
    return np.stack([vertices.min(axis=0), vertices.max(axis=0)])


# ------------------------------------------------------------------------------------------ procedural


@pytest.mark.parametrize(("kind", "variant"), KINDS)
def test_procedural_mesh_is_normalised_closed_and_outward(kind, variant):
    vertices, faces = procedural_mesh(kind, variant)
    assert vertices.dtype == np.float32 and vertices.ndim == 2 and vertices.shape[1] == 3
    assert faces.dtype == np.int32 and faces.ndim == 2 and faces.shape[1] == 3 and len(faces) >= 1
    lo, hi = bounds(vertices)
    assert abs(float((hi - lo).max()) - 1.0) <= 1e-5
    np.testing.assert_allclose((lo + hi) / 2, 0.0, atol=1e-5)
    assert faces.min() == 0 and faces.max() == len(vertices) - 1
    assert len(np.unique(faces)) == len(vertices)  # no unused vertex
    a, b, c = (vertices[faces[:, k]].astype(np.float64) for k in range(3))
    assert np.linalg.norm(np.cross(b - a, c - a), axis=1).min() > 1e-9
    # Closed and consistently wound: every directed edge once, its reverse once.
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = set(map(tuple, directed.tolist()))
    assert len(edges) == len(directed)
    assert all((w, v) in edges for v, w in edges)
    # Outward: every closed part (the mug's cup and handle apart) encloses a positive volume.
    for part in components(faces):
        assert signed_volume(vertices, faces[part]) > 0, f"{kind} {variant}: a part is wound inwards"


def test_procedural_mesh_variants_change_proportions():
    box = [bounds(procedural_mesh("box", v)[0]) for v in range(3)]
    np.testing.assert_allclose(box[0][1] - box[0][0], [1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(box[1][1] - box[1][0], [1, 0.5, 0.25], atol=1e-6)
    np.testing.assert_allclose(box[2][1] - box[2][0], [1 / 3, 1 / 3, 1], atol=1e-6)
    for kind in PROCEDURAL_CLASSES:
        sides = {tuple(np.round(np.ptp(procedural_mesh(kind, v)[0], axis=0), 3)) for v in range(3)}
        assert len(sides) == 3, f"{kind}: variants share proportions"


def test_procedural_meshes_are_deterministic_and_hashed_stably():
    for kind in PROCEDURAL_CLASSES:
        v1, f1 = procedural_mesh(kind, 1)
        v2, f2 = procedural_mesh(kind, 1)
        assert v1.tobytes() == v2.tobytes() and f1.tobytes() == f2.tobytes()
    first, second = procedural_library(), procedural_library()
    hashes = {m.name: m.sha256 for ms in first.by_class.values() for m in ms}
    assert hashes == {m.name: m.sha256 for ms in second.by_class.values() for m in ms}
    box = first.by_class["box"][0]
    expected = hashlib.sha256(box.vertices.astype("<f4").tobytes() + box.faces.astype("<i4").tobytes()).hexdigest()
    assert box.sha256 == expected
    assert len(set(hashes.values())) == len(hashes)


def test_procedural_library_holds_every_kind_and_variant():
    library = procedural_library()
    assert library.classes() == sorted(PROCEDURAL_CLASSES)
    assert library.count() == 3 * len(PROCEDURAL_CLASSES)
    assert library.skipped == []
    mugs = library.by_class["mug"]
    assert [m.name for m in mugs] == ["procedural:mug_0", "procedural:mug_1", "procedural:mug_2"]
    assert {m.class_name for m in mugs} == {"mug"} and {m.source for m in mugs} == {"procedural:mug"}
    assert procedural_library(1).count() == len(PROCEDURAL_CLASSES)


@pytest.mark.parametrize(("kind", "variant", "match"), [("teapot", 0, "box, can"), ("box", 3, "0..2"),
                                                        ("box", -1, "0..2"), ("box", True, "0..2")])  # fmt: skip
def test_procedural_mesh_rejects_unknown_kind_and_variant(kind, variant, match):
    with pytest.raises(InvalidInput, match=match):
        procedural_mesh(kind, variant)


@pytest.mark.parametrize("variants", [0, 4, 1.5])
def test_procedural_library_rejects_variant_count_out_of_range(variants):
    with pytest.raises(InvalidInput, match="1..3"):
        procedural_library(variants)


# ------------------------------------------------------------------------------------------- normalise


def test_normalise_drops_degenerate_faces_and_unused_vertices():
    vertices = np.array([[0, 0, 0], [2, 0, 0], [0, 4, 0], [1, 0, 0], [100, 100, 100]], np.float64)
    faces = np.array([[0, 1, 2], [0, 1, 3], [2, 2, 1]])  # collinear, then a repeated index
    v, f = normalise(vertices, faces)
    assert v.dtype == np.float32 and f.dtype == np.int32
    assert f.shape == (1, 3) and v.shape == (3, 3)  # the far-away unused vertex does not count
    np.testing.assert_allclose(bounds(v), [[-0.25, -0.5, 0], [0.25, 0.5, 0]], atol=1e-7)


@pytest.mark.parametrize(("vertices", "faces", "match"), [
    (np.zeros((3, 2)), [[0, 1, 2]], r"\(N, 3\)"),
    (np.eye(3), [[0.0, 1.0, 2.0]], "integer"),
    (np.eye(3), [[0, 1, 3]], r"\[0, 3\)"),
    ([[0, 0, 0], [1, 0, 0], [np.nan, 1, 0]], [[0, 1, 2]], "1 of 3 hold NaN"),
    ([[0, 0, 0], [1, 0, 0], [2, 0, 0]], [[0, 1, 2]], "no face with an area"),
    ([[1, 1, 1]] * 3, [[0, 1, 2]], "no face with an area"),
])  # fmt: skip
def test_normalise_rejects_bad_or_empty_meshes(vertices, faces, match):
    with pytest.raises(InvalidInput, match=match):
        normalise(np.asarray(vertices), np.asarray(faces))


def test_mesh_arrays_are_checked_and_read_only():
    v, f = procedural_mesh("cone")
    mesh = Mesh("procedural:cone_0", "cone", v, f, "x", "procedural:cone")
    with pytest.raises(ValueError):
        mesh.vertices[0, 0] = 5.0
    with pytest.raises(InvalidInput, match="float32"):
        Mesh("m", "cone", v.astype(np.float64), f, "x", "s")
    with pytest.raises(InvalidInput, match="int32"):
        Mesh("m", "cone", v, f[:0], "x", "s")


# -------------------------------------------------------------------------------------------- load_mesh


@pytest.mark.parametrize("suffix", [".obj", ".ply", ".stl", ".glb", ".gltf"])
def test_load_mesh_round_trips_every_format(tmp_path, suffix):
    vertices, faces = procedural_mesh("box", 1)
    path = tmp_path / f"box{suffix}"
    trimesh.Trimesh(vertices, faces, process=False).export(str(path))
    loaded_v, loaded_f = load_mesh(path)
    assert loaded_v.dtype == np.float32 and loaded_f.dtype == np.int32
    assert len(loaded_f) == len(faces)
    v, f = normalise(loaded_v, loaded_f)
    assert len(f) == len(faces)
    np.testing.assert_allclose(bounds(v), bounds(vertices), atol=1e-5)


def test_load_mesh_reads_binary_and_ascii_stl(tmp_path):
    mesh = trimesh.creation.box(extents=(1, 2, 3))
    (tmp_path / "bin.stl").write_bytes(mesh.export(file_type="stl"))
    (tmp_path / "text.stl").write_text(mesh.export(file_type="stl_ascii"))
    assert (tmp_path / "bin.stl").read_bytes()[:5] != b"solid"
    for name in ("bin.stl", "text.stl"):
        v, f = load_mesh(tmp_path / name)
        assert len(f) == 12
        np.testing.assert_allclose(bounds(v), mesh.bounds, atol=1e-6)


def test_load_mesh_merges_glb_nodes_with_their_transforms(tmp_path):
    box = trimesh.creation.box(extents=(1, 1, 1))
    scene = trimesh.Scene()
    scene.add_geometry(box, node_name="left", transform=trimesh.transformations.translation_matrix([-3, 0, 0]))
    scene.add_geometry(box, node_name="right", transform=trimesh.transformations.translation_matrix([3, 0, 2]))
    path = tmp_path / "pair.glb"
    scene.export(str(path))
    v, f = load_mesh(path)
    assert len(f) == 24
    np.testing.assert_allclose(bounds(v), [[-3.5, -0.5, -0.5], [3.5, 0.5, 2.5]], atol=1e-6)


def test_load_mesh_merges_obj_groups(tmp_path):
    path = tmp_path / "groups.obj"
    path.write_text("o a\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\no b\nv 0 0 5\nv 1 0 5\nv 0 1 5\nf 4 5 6\n")
    v, f = load_mesh(path)
    assert len(f) == 2
    np.testing.assert_allclose(bounds(v), [[0, 0, 0], [1, 1, 5]])


@pytest.mark.parametrize(("name", "content", "match"), [
    ("model.fbx", b"x", r"unsupported file type '\.fbx'.*\.obj, \.ply, \.stl, \.glb, \.gltf"),
    ("materials.mtl", b"newmtl a\n", "companion file"),
    ("empty.stl", b"", "empty"),
    ("noise.glb", np.random.default_rng(0).bytes(3000), "not a readable GLB"),
    ("noise.obj", np.random.default_rng(1).bytes(3000), "no geometry found"),
    ("points.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no faces"),
])  # fmt: skip
def test_load_mesh_names_the_file_and_the_problem(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidInput, match=match) as caught:
        load_mesh(path)
    assert str(path) in str(caught.value)


def test_load_mesh_missing_file(tmp_path):
    with pytest.raises(InvalidInput, match="does not exist"):
        load_mesh(tmp_path / "gone.obj")


def test_mesh_suffixes():
    assert MESH_SUFFIXES == (".obj", ".ply", ".stl", ".glb", ".gltf")


# ------------------------------------------------------------------------------------------ scan_meshes


@pytest.fixture
def class_folder(tmp_path):
    """A meshes folder with one sub-folder per class, good files and every kind of bad one."""
    root = tmp_path / "meshes"
    for rel in ("box/b.obj", "box/a/deep.ply", "can/can.stl", "plant/p.obj", "background/floor.obj", "top.obj"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        box_file(root / rel)
    (root / "can/x.obj").write_bytes(np.random.default_rng(2).bytes(4000))
    (root / "can/empty.ply").write_bytes(b"")
    (root / "can/notes.txt").write_text("bought at the flea market")
    (root / "can/points.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    (root / ".git").mkdir()
    (root / ".git/junk.obj").write_text("not scanned")
    return root


def test_scan_class_folders_lists_good_files_and_skips_bad_ones(class_folder):
    library = scan_meshes(class_folder, CLASSES)
    assert isinstance(library, MeshLibrary)
    assert library.classes() == ["box", "can"] and library.count() == 3
    assert [m.name for m in library.by_class["box"]] == ["box/a/deep.ply", "box/b.obj"]
    can = library.by_class["can"][0]
    source = str((class_folder / "can/can.stl").resolve())
    assert (can.name, can.class_name, can.source) == ("can/can.stl", "can", source)
    assert can.sha256 == hashlib.sha256((class_folder / "can/can.stl").read_bytes()).hexdigest()
    np.testing.assert_allclose(bounds(can.vertices), [[-0.5, -0.25, -0.125], [0.5, 0.25, 0.125]], atol=1e-6)
    skipped = dict(library.skipped)
    assert set(skipped) == {"can/x.obj", "can/empty.ply", "can/notes.txt", "can/points.obj", "plant/p.obj",
                            "background/floor.obj", "top.obj"}  # fmt: skip
    assert "no geometry found" in skipped["can/x.obj"]
    assert "empty" in skipped["can/empty.ply"]
    assert "'.txt'" in skipped["can/notes.txt"] and ".obj" in skipped["can/notes.txt"]
    assert "no faces" in skipped["can/points.obj"]
    assert skipped["plant/p.obj"] == "class 'plant' is not one of the dataset's classes: box, can, ball"
    assert "background" in skipped["background/floor.obj"] and "index 0" in skipped["background/floor.obj"]
    assert "class sub-folder" in skipped["top.obj"]


def test_scan_without_class_names_takes_every_sub_folder(class_folder):
    library = scan_meshes(class_folder)
    assert library.classes() == ["background", "box", "can", "plant"]
    assert library.count() == 5


def test_scan_is_deterministic(class_folder):
    first, second = scan_meshes(class_folder, CLASSES), scan_meshes(class_folder, CLASSES)
    assert first.by_class == second.by_class and first.skipped == second.skipped


def test_scan_meshes_json_wins_and_reports_missing_paths(tmp_path):
    root = tmp_path / "meshes"
    (root / "ignored").mkdir(parents=True)
    box_file(root / "ignored/i.obj")
    (root / "parts").mkdir()
    box_file(root / "parts/a.glb")
    box_file(root / "b.stl")
    box_file(root / "floor.obj")
    box_file(tmp_path / "outside.obj")
    files = {"parts/a.glb": "box", "b.stl": "can", "missing.obj": "ball", "parts/a.glb ": "plant",
             "../outside.obj": "box", "./floor.obj": "background"}  # fmt: skip
    (root / "meshes.json").write_text(json.dumps({"files": files}))
    library = scan_meshes(root, CLASSES)
    assert {c: [m.name for m in ms] for c, ms in library.by_class.items()} == {"box": ["parts/a.glb"],
                                                                               "can": ["b.stl"]}  # fmt: skip
    skipped = dict(library.skipped)
    assert "does not exist" in skipped["missing.obj"]
    assert "not one of the dataset's classes" in skipped["parts/a.glb "]
    assert "stay inside" in skipped["../outside.obj"]
    assert "background" in skipped["floor.obj"]  # "./floor.obj" in POSIX form
    assert "ignored/i.obj" not in skipped


@pytest.mark.parametrize(("text", "match"), [
    ("{not json", "meshes.json' is not valid JSON"),
    ('["a.obj"]', "JSON list"),
    ('{"meshes": {}}', "no 'files'"),
    ('{"files": {"a.obj": 3}}', "class names as strings"),
])  # fmt: skip
def test_scan_rejects_a_broken_meshes_json(tmp_path, text, match):
    (tmp_path / "meshes.json").write_text(text)
    with pytest.raises(InvalidInput, match=match) as caught:
        scan_meshes(tmp_path, CLASSES)
    assert "meshes.json" in str(caught.value)


def test_scan_missing_folder_names_it(tmp_path):
    with pytest.raises(InvalidInput, match="does not exist") as caught:
        scan_meshes(tmp_path / "nowhere")
    assert "nowhere" in str(caught.value)
    (tmp_path / "file.obj").write_text("")
    with pytest.raises(InvalidInput, match="is a file"):
        scan_meshes(tmp_path / "file.obj")


def test_scan_rejects_class_names_given_as_a_string(tmp_path):
    with pytest.raises(InvalidInput, match="class_names"):
        scan_meshes(tmp_path, "box")
