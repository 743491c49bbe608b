"""Triangle meshes for synthetic renders: reading mesh files, normalising them, and bundled procedural shapes.

Every mesh handed to scene building is *normalised*: vertices ``(N, 3) float32`` centred on the bounding-box
centre and scaled so the largest bounding-box side is 1.0; faces ``(M, 3) int32`` with no zero-area face and no
unused vertex. Files are read with ``trimesh`` (OBJ, PLY, STL ascii/binary, GLB / glTF); a file holding several
objects (a GLB scene, an OBJ with groups) becomes one mesh with its node transforms applied.

A meshes folder is either one sub-folder per class (mesh files inside, at any depth) or a ``meshes.json`` at
its top mapping relative paths to class names. :func:`scan_meshes` reads every file it can and reports every
file it leaves out, with the reason, instead of failing on the first bad one.

The procedural shapes (:data:`PROCEDURAL_CLASSES`) are built here in numpy: closed, consistently wound
(counter-clockwise seen from outside) and deterministic, so their sha256 identifies them across runs.
Vertices are shared between neighbouring faces (watertight by index); a renderer that builds the mesh without
vertex normals shades it flat.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from core.errors import InvalidInput

MESH_SUFFIXES = (".obj", ".ply", ".stl", ".glb", ".gltf")
PROCEDURAL_CLASSES = ("box", "can", "ball", "cone", "ring", "mug")
PROCEDURAL_VARIANTS = 3
MESHES_JSON = "meshes.json"

# Files that travel with mesh files (materials, glTF buffers, textures) but are not meshes themselves.
_COMPANION_SUFFIXES = (".mtl", ".bin", ".png", ".jpg", ".jpeg", ".tga", ".bmp", ".ktx2", ".webp")
# Twice a triangle's area (|cross product|) at or below which it counts as zero, in normalised units.
_MIN_DOUBLE_AREA = 1e-12


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh normalised for scene building.

    Attributes:
        name: path relative to the meshes folder in POSIX form (``"chair/chair_01.obj"``), or
            ``"procedural:<kind>_<variant>"``.
        class_name: the class the mesh renders as.
        vertices: ``(N, 3) float32``, centred on the bounding-box centre, largest bounding-box side 1.0
            (read-only).
        faces: ``(M, 3) int32`` indices into ``vertices``, ``M >= 1``, no zero-area face (read-only).
        sha256: hex digest of the source file's bytes; for procedural meshes, of the little-endian
            ``vertices`` then ``faces`` bytes.
        source: absolute file path, or ``"procedural:<kind>"``.

    Equality and hashing use ``name``, ``class_name``, ``sha256`` and ``source`` (not the arrays).
    """

    name: str
    class_name: str
    vertices: np.ndarray = field(compare=False, repr=False)
    faces: np.ndarray = field(compare=False, repr=False)
    sha256: str
    source: str

    def __post_init__(self) -> None:
        v, f = self.vertices, self.faces
        if not (isinstance(v, np.ndarray) and v.dtype == np.float32 and v.ndim == 2 and v.shape[1] == 3):
            raise InvalidInput(f"Mesh {self.name!r}: vertices must be an (N, 3) float32 array, got "
                               f"{_describe(v)}")  # fmt: skip
        if not (isinstance(f, np.ndarray) and f.dtype == np.int32 and f.ndim == 2 and f.shape[1] == 3 and len(f)):
            raise InvalidInput(f"Mesh {self.name!r}: faces must be an (M, 3) int32 array with M >= 1, got "
                               f"{_describe(f)}")  # fmt: skip
        v.setflags(write=False)
        f.setflags(write=False)


@dataclass
class MeshLibrary:
    """Meshes by class, and what was left out.

    Attributes:
        by_class: class name -> meshes sorted by name (only classes with at least one mesh).
        skipped: ``(path relative to the folder, or name; reason)`` for every file left out.
    """

    by_class: dict[str, list[Mesh]] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def classes(self) -> list[str]:
        """Class names that have at least one mesh, sorted."""
        return sorted(name for name, meshes in self.by_class.items() if meshes)

    def count(self) -> int:
        """How many meshes the library holds, all classes together."""
        return sum(len(meshes) for meshes in self.by_class.values())


def _describe(a) -> str:
    """A short description of an array-like for error messages: ``float64 array of shape (4, 2)``."""
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return type(a).__name__


# --------------------------------------------------------------------------------------------- normalising


def normalise(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and scale a mesh, dropping zero-area faces and unused vertices.

    Args:
        vertices: ``(N, 3)`` real array, finite.
        faces: ``(M, 3)`` integer array of indices in ``[0, N)``.

    Returns:
        ``(vertices (K, 3) float32, faces (L, 3) int32)``: vertices centred on their bounding-box centre and
        scaled so the largest bounding-box side is 1.0; faces with a repeated index or zero area (after the
        conversion to float32) dropped, then vertices no face uses; ``1 <= L <= M``.

    Raises:
        InvalidInput: wrong shape or dtype, non-finite vertices, indices out of range, or no face with an area.
    """
    v, f = _check_arrays(vertices, faces)
    while True:
        f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
        if not len(f):
            raise InvalidInput("the mesh has no face with an area (every face is degenerate): nothing to render")
        scaled = _centre_and_scale(v, np.unique(f))
        keep = _double_areas(scaled, f) > _MIN_DOUBLE_AREA
        if keep.all():
            return _compact(scaled, f)
        f = f[keep]


def _check_arrays(vertices, faces) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``(N, 3)`` finite real vertices and ``(M, 3)`` in-range integer faces; float64 / int64 copies."""
    v, f = np.asarray(vertices), np.asarray(faces)
    if v.ndim != 2 or v.shape[1:] != (3,) or not (np.issubdtype(v.dtype, np.floating)
                                                  or np.issubdtype(v.dtype, np.integer)):  # fmt: skip
        raise InvalidInput(f"vertices must be an (N, 3) array of real numbers, got {_describe(v)}")
    if f.ndim != 2 or f.shape[1:] != (3,) or not np.issubdtype(f.dtype, np.integer):
        raise InvalidInput(f"faces must be an (M, 3) integer array of vertex indices, got {_describe(f)}")
    v = v.astype(np.float64)
    bad = int((~np.isfinite(v).all(axis=1)).sum())
    if bad:
        raise InvalidInput(f"vertices must be finite; {bad} of {len(v)} hold NaN or infinity")
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise InvalidInput(f"face indices must lie in [0, {len(v)}) (the vertex count); got {f.min()}..{f.max()}")
    return v, f.astype(np.int64)


def _centre_and_scale(v: np.ndarray, used: np.ndarray) -> np.ndarray:
    """``v`` (N, 3) float64 moved and scaled by the bounding box of ``v[used]``; float32 result."""
    lo, hi = v[used].min(axis=0), v[used].max(axis=0)
    side = float((hi - lo).max())
    if side <= 0.0:
        return np.zeros(v.shape, np.float32)  # every face collapses to a point: all are dropped next
    return ((v - (lo + hi) / 2.0) / side).astype(np.float32)


def _double_areas(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """``|cross(b - a, c - a)|`` (twice the area) of each face, float64 ``(M,)``, from float32 vertices ``v``."""
    a, b, c = (v[f[:, k]].astype(np.float64) for k in range(3))
    return np.linalg.norm(np.cross(b - a, c - a), axis=1)


def _compact(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop vertices no face uses and renumber faces; ``(float32 (K, 3), int32 (L, 3))``."""
    used, inverse = np.unique(f, return_inverse=True)
    return np.ascontiguousarray(v[used], np.float32), inverse.reshape(f.shape).astype(np.int32)


# ------------------------------------------------------------------------------------------------ loading


def load_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a mesh file into one triangle mesh (not normalised).

    A file holding several objects (a GLB/glTF scene, an OBJ with groups) is merged into one mesh with each
    node's transform applied; points and lines are ignored.

    Args:
        path: a file ending in one of :data:`MESH_SUFFIXES` (any case).

    Returns:
        ``(vertices (N, 3) float32, faces (M, 3) int32)`` with ``M >= 1``.

    Raises:
        InvalidInput: naming the file and why: unsupported suffix (listing :data:`MESH_SUFFIXES`), missing,
            unreadable, empty, not a mesh of its format, or no faces.
    """
    path = Path(path)
    try:
        return _read_mesh(path)
    except InvalidInput as error:
        raise InvalidInput(f"mesh file '{path}': {error}") from error


def _read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """:func:`load_mesh` without the file name in its errors (the scanner reports the name beside them)."""
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise InvalidInput(_suffix_reason(suffix))
    if not path.exists():
        raise InvalidInput("the file does not exist")
    if not path.is_file():
        raise InvalidInput("is a folder, not a mesh file")
    try:
        size = path.stat().st_size
    except OSError as error:
        raise InvalidInput(f"cannot be read ({error.strerror or error})") from error
    if size == 0:
        raise InvalidInput("the file is empty (0 bytes)")
    scene = _load_scene(path, suffix)
    return _merge_triangles(scene, suffix)


def _suffix_reason(suffix: str) -> str:
    """Why a file with ``suffix`` is not read as a mesh."""
    accepted = ", ".join(MESH_SUFFIXES)
    if suffix in _COMPANION_SUFFIXES:
        return f"'{suffix}' is a companion file of a mesh (materials, buffers or textures), not a mesh: {accepted}"
    return f"unsupported file type {suffix or '(no suffix)'!r}; mesh files end in one of {accepted}"


def _load_scene(path: Path, suffix: str):
    """``trimesh.load_scene`` of ``path``; any parser failure becomes :class:`InvalidInput`."""
    import trimesh

    try:
        return trimesh.load_scene(str(path), file_type=suffix[1:])
    except OSError as error:
        raise InvalidInput(f"cannot be read ({error.strerror or error})") from error
    except Exception as error:  # trimesh's parsers raise any type on malformed bytes
        raise InvalidInput(f"not a readable {suffix[1:].upper()} mesh ({type(error).__name__}: {error})") from error


def _merge_triangles(scene, suffix: str) -> tuple[np.ndarray, np.ndarray]:
    """Every triangle mesh of a ``trimesh.Scene`` (node transforms applied) as one ``(float32, int32)`` pair."""
    import trimesh

    if not scene.geometry:
        raise InvalidInput(f"no geometry found: not a readable {suffix[1:].upper()} mesh")
    if not any(isinstance(g, trimesh.Trimesh) and len(g.faces) for g in scene.geometry.values()):
        kinds = sorted({type(g).__name__ for g in scene.geometry.values()})
        raise InvalidInput(f"has no faces, only {', '.join(kinds)} geometry (a mesh needs triangles)")
    mesh = scene.to_mesh()
    if not len(mesh.faces):
        raise InvalidInput("has no faces after applying the scene's nodes (no node places a mesh)")
    return np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int32)


def _file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _mesh_from_file(path: Path, name: str, class_name: str) -> Mesh:
    """Read, normalise and hash one file; :class:`InvalidInput` (without the path) when it cannot be used."""
    vertices, faces = normalise(*_read_mesh(path))
    return Mesh(name=name, class_name=class_name, vertices=vertices, faces=faces, sha256=_file_sha256(path),
                source=str(path.resolve()))  # fmt: skip


# ----------------------------------------------------------------------------------------------- scanning


def scan_meshes(folder: str | Path, class_names: Sequence[str] | None = None) -> MeshLibrary:
    """The meshes of a folder, by class.

    Two layouts: one sub-folder per class name (mesh files inside, at any depth; files at the top are left
    out), or a ``meshes.json`` at the top, ``{"files": {"relative/path.obj": "class name", ...}}``, which wins
    when present. Hidden files and folders (name starting with ``.``) are ignored.

    Args:
        folder: the meshes folder.
        class_names: the dataset's class names in index order; ``class_names[0]`` is the background and is
            never a mesh class. Files of the background or of a class not listed are skipped. ``None``: every
            sub-folder name (or every class named in ``meshes.json``) is a class.

    Returns:
        A :class:`MeshLibrary`; ``skipped`` names every file left out (unreadable, empty, unsupported, no
        faces, other class) with the reason.

    Raises:
        InvalidInput: the folder does not exist (or is a file), ``class_names`` is not a list of strings, or
            ``meshes.json`` is not valid JSON or not of the shape above.
    """
    root = Path(folder)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise InvalidInput(f"meshes folder '{root}' {what}; give a folder with one sub-folder of mesh files per "
                           f"class, or a {MESHES_JSON} mapping files to classes")  # fmt: skip
    names = _check_class_names(class_names)
    entries = _json_entries(root) if (root / MESHES_JSON).is_file() else _folder_entries(root)
    library = MeshLibrary()
    for rel, class_name, reason in entries:
        _add_entry(library, root, rel, class_name, reason or _class_reason(class_name, names))
    library.by_class = {c: sorted(library.by_class[c], key=lambda m: m.name) for c in sorted(library.by_class)}
    return library


def _check_class_names(class_names: Sequence[str] | None) -> list[str] | None:
    """``class_names`` as a list, or ``None``; :class:`InvalidInput` unless a sequence of strings."""
    if class_names is None:
        return None
    if isinstance(class_names, str | bytes) or not all(isinstance(c, str) for c in class_names):
        raise InvalidInput(f"class_names must be a list of class-name strings (index 0 = background), got "
                           f"{class_names!r}")  # fmt: skip
    return list(class_names)


def _class_reason(class_name: str, names: list[str] | None) -> str | None:
    """Why files of ``class_name`` are left out, or ``None`` when the class is accepted."""
    if not class_name.strip():
        return "empty class name"
    if names is None:
        return None
    if names and class_name == names[0]:
        return f"class {class_name!r} is the dataset's background (class index 0), which is never a mesh class"
    if class_name not in names[1:]:
        return f"class {class_name!r} is not one of the dataset's classes: {', '.join(names[1:]) or '(none)'}"
    return None


def _add_entry(library: MeshLibrary, root: Path, rel: str, class_name: str, reason: str | None) -> None:
    """Read one file into ``library``, or record why it is skipped (``reason`` already known, or found here)."""
    if reason is None:
        path = root / rel
        try:
            mesh = _mesh_from_file(path, rel, class_name)
        except InvalidInput as error:
            reason = str(error)
        else:
            library.by_class.setdefault(class_name, []).append(mesh)
            return
    library.skipped.append((rel, reason))


def _folder_entries(root: Path) -> list[tuple[str, str, str | None]]:
    """``(relative POSIX path, class, reason to skip or None)`` for every non-hidden file under ``root``."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(f for f in filenames if not f.startswith(".")):
            rel = (Path(dirpath) / filename).relative_to(root).as_posix()
            if "/" in rel:
                entries.append((rel, rel.split("/")[0], None))
            else:
                entries.append((rel, "", f"not inside a class sub-folder: put mesh files in <class name>/ "
                                         f"sub-folders, or list them in {MESHES_JSON}"))  # fmt: skip
    return entries


def _json_entries(root: Path) -> list[tuple[str, str, str | None]]:
    """``(relative POSIX path, class, reason to skip or None)`` of ``meshes.json``, sorted by path.

    Raises:
        InvalidInput: not valid JSON, or not ``{"files": {"path": "class", ...}}``.
    """
    path = root / MESHES_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInput(f"'{path}' is not valid JSON ({error}); expected "
                           '{"files": {"relative/path.obj": "class name", ...}}') from error  # fmt: skip
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(c, str) for k, c in files.items()):
        raise InvalidInput(f"'{path}' must hold {{\"files\": {{\"relative/path.obj\": \"class name\", ...}}}} "
                           f"(paths and class names as strings); got {_json_shape(data)}")  # fmt: skip
    return sorted(_json_entry(rel, cls) for rel, cls in files.items())


def _json_shape(data) -> str:
    """A short description of what a ``meshes.json`` held, for its error message."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}"
    if "files" not in data:
        return f"an object with keys {sorted(data)} (no 'files')"
    return f"'files' = {json.dumps(data['files'])[:120]}"


def _json_entry(rel: str, class_name: str) -> tuple[str, str, str | None]:
    """One ``meshes.json`` entry: the path in POSIX form, the class, and a reason when the path is unusable."""
    path = PurePosixPath(rel.replace("\\", "/"))
    if not rel.strip():
        return rel, class_name, "empty path"
    if path.is_absolute() or ".." in path.parts or rel[1:2] == ":":
        return rel, class_name, "paths in meshes.json must be relative to its folder and stay inside it"
    return path.as_posix(), class_name, None


# ---------------------------------------------------------------------------------------------- procedural


def procedural_mesh(kind: str, variant: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A bundled shape generated in numpy, normalised (see :func:`normalise`).

    Kinds: ``box`` (1x1x1 / 2x1x0.5 / 1x1x3), ``can`` (closed cylinder: regular / flat tin / tall), ``ball``
    (UV sphere: round / flattened / egg-long), ``cone`` (closed: regular / squat / slender), ``ring`` (torus:
    regular / thick / thin tube), ``mug`` (cup with a wall and a floor, plus a closed handle whose ends sit in
    the wall; three body proportions). Every part is closed and wound counter-clockwise seen from outside.

    Args:
        kind: one of :data:`PROCEDURAL_CLASSES`.
        variant: ``0 .. PROCEDURAL_VARIANTS - 1``; changes proportions.

    Returns:
        ``(vertices (N, 3) float32, faces (M, 3) int32)``, the same bytes on every call.

    Raises:
        InvalidInput: unknown kind or variant out of range.
    """
    if kind not in _BUILDERS:
        raise InvalidInput(f"unknown procedural mesh kind {kind!r}; accepted: {', '.join(PROCEDURAL_CLASSES)}")
    if isinstance(variant, bool) or not isinstance(variant, int | np.integer) or not 0 <= variant < PROCEDURAL_VARIANTS:
        raise InvalidInput(f"procedural mesh variant must be an integer in 0..{PROCEDURAL_VARIANTS - 1}, "
                           f"got {variant!r}")  # fmt: skip
    vertices, faces = _BUILDERS[kind](int(variant))
    return normalise(vertices, faces)


def procedural_library(variants: int = PROCEDURAL_VARIANTS) -> MeshLibrary:
    """The bundled meshes: every kind of :data:`PROCEDURAL_CLASSES` times ``variants``, class = kind.

    Args:
        variants: how many variants per kind, ``1 .. PROCEDURAL_VARIANTS``.

    Returns:
        A :class:`MeshLibrary` whose meshes are named ``procedural:<kind>_<v>`` with source
        ``procedural:<kind>``; nothing skipped.
    """
    if isinstance(variants, bool) or not isinstance(variants, int) or not 1 <= variants <= PROCEDURAL_VARIANTS:
        raise InvalidInput(f"variants must be an integer in 1..{PROCEDURAL_VARIANTS}, got {variants!r}")
    by_class = {kind: [_procedural(kind, v) for v in range(variants)] for kind in sorted(PROCEDURAL_CLASSES)}
    return MeshLibrary(by_class=by_class)


def _procedural(kind: str, variant: int) -> Mesh:
    """One bundled :class:`Mesh`, hashed from its little-endian vertex and face bytes."""
    vertices, faces = procedural_mesh(kind, variant)
    digest = hashlib.sha256(vertices.astype("<f4").tobytes() + faces.astype("<i4").tobytes()).hexdigest()
    return Mesh(name=f"procedural:{kind}_{variant}", class_name=kind, vertices=vertices, faces=faces,
                sha256=digest, source=f"procedural:{kind}")  # fmt: skip


def _box(variant: int) -> tuple[np.ndarray, np.ndarray]:
    """An axis-aligned box of size 1x1x1 / 2x1x0.5 / 1x1x3: 8 vertices, 12 faces."""
    size = np.array([(1.0, 1.0, 1.0), (2.0, 1.0, 0.5), (1.0, 1.0, 3.0)][variant])
    corners = np.array([(i & 1, (i >> 1) & 1, (i >> 2) & 1) for i in range(8)], np.float64) * size
    # Each quad counter-clockwise seen from outside: -z, +z, -y, +y, -x, +x.
    quads = np.array([(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)])
    return corners, np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])


def _revolve(profile: Sequence[tuple[float, float]], segments: int) -> tuple[np.ndarray, np.ndarray]:
    """A closed surface of revolution about z.

    Args:
        profile: ``(r, z)`` points from the bottom pole to the top pole (their ``r`` is ignored), ``r > 0``
            between them, walking the outline so that ``t_theta x t_profile`` points out of the solid (for a
            simple solid: bottom outwards, up the outside, top inwards).
        segments: points per ring.

    Returns:
        ``(vertices (N, 3) float64, faces (M, 3) int64)``, rings of ``segments`` vertices and one vertex per pole.
    """
    theta = 2.0 * math.pi * np.arange(segments) / segments
    ring = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    rings = [(r * ring, z) for r, z in profile[1:-1]]
    verts = [np.array([[0.0, 0.0, profile[0][1]]])]
    verts += [np.column_stack([xy, np.full(segments, z)]) for xy, z in rings]
    verts.append(np.array([[0.0, 0.0, profile[-1][1]]]))
    j, j1 = np.arange(segments), (np.arange(segments) + 1) % segments
    top = 1 + segments * len(rings)
    faces = [np.column_stack([np.zeros(segments, int), 1 + j1, 1 + j])]
    for i in range(len(rings) - 1):
        a, b = 1 + i * segments + j, 1 + i * segments + j1
        c, d = b + segments, a + segments
        faces += [np.column_stack([a, b, c]), np.column_stack([a, c, d])]
    last = 1 + (len(rings) - 1) * segments
    faces.append(np.column_stack([last + j, last + j1, np.full(segments, top)]))
    return np.concatenate(verts), np.concatenate(faces)


def _tube(centre: np.ndarray, normal: np.ndarray, tangent: np.ndarray, radius: float, sides: int,
          closed: bool) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """A tube of circular cross-section swept along a centreline.

    Args:
        centre, normal, tangent: ``(K, 3)`` float64 centreline points, unit normals and unit tangents.
        radius: tube radius.
        sides: points per cross-section.
        closed: the centreline is a loop (a torus); otherwise both ends get a flat cap.

    Returns:
        ``(vertices (N, 3) float64, faces (M, 3) int64)``, outward wound.
    """
    binormal = np.cross(normal, tangent)  # (normal, binormal): cross-section axes; tangent x binormal = normal
    v = 2.0 * math.pi * np.arange(sides) / sides
    offsets = np.cos(v)[None, :, None] * normal[:, None] + np.sin(v)[None, :, None] * binormal[:, None]
    verts = (centre[:, None] + radius * offsets).reshape(-1, 3)
    k = len(centre)
    i = np.arange(k if closed else k - 1)[:, None]
    j = np.arange(sides)[None, :]
    a, b = i * sides + j, ((i + 1) % k) * sides + j
    c, d = ((i + 1) % k) * sides + (j + 1) % sides, i * sides + (j + 1) % sides
    faces = [np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)]
    if not closed:
        j0, j1 = np.arange(sides), (np.arange(sides) + 1) % sides
        start, end = len(verts), len(verts) + 1
        verts = np.concatenate([verts, centre[[0, -1]]])
        faces.append(np.column_stack([np.full(sides, start), j0, j1]))
        faces.append(np.column_stack([np.full(sides, end), (k - 1) * sides + j1, (k - 1) * sides + j0]))
    return verts, np.concatenate(faces)


def _can(variant: int) -> tuple[np.ndarray, np.ndarray]:
    """A closed cylinder: radius/height 0.5/1.2, 0.5/0.5 (tin), 0.3/1.5 (tall)."""
    r, h = [(0.5, 1.2), (0.5, 0.5), (0.3, 1.5)][variant]
    return _revolve([(0.0, -h / 2), (r, -h / 2), (r, h / 2), (0.0, h / 2)], segments=48)


def _ball(variant: int) -> tuple[np.ndarray, np.ndarray]:
    """A UV sphere (48 x 24), then squashed (z 0.75) or stretched (z 1.3) for variants 1 and 2."""
    stretch = (1.0, 0.75, 1.3)[variant]
    phi = math.pi * np.arange(25) / 24
    return _revolve(list(zip(np.sin(phi), -stretch * np.cos(phi), strict=True)), segments=48)


def _cone(variant: int) -> tuple[np.ndarray, np.ndarray]:
    """A closed cone: radius/height 0.5/1.0, 0.6/0.5 (squat), 0.3/1.5 (slender)."""
    r, h = [(0.5, 1.0), (0.6, 0.5), (0.3, 1.5)][variant]
    return _revolve([(0.0, -h / 2), (r, -h / 2), (0.0, h / 2)], segments=48)


def _ring(variant: int) -> tuple[np.ndarray, np.ndarray]:
    """A torus about z, major radius 1, tube radius 0.25 / 0.4 / 0.12 (64 x 24 quads)."""
    u = 2.0 * math.pi * np.arange(64) / 64
    normal = np.column_stack([np.cos(u), np.sin(u), np.zeros_like(u)])
    tangent = np.column_stack([-np.sin(u), np.cos(u), np.zeros_like(u)])
    return _tube(normal, normal, tangent, (0.25, 0.4, 0.12)[variant], sides=24, closed=True)


def _mug(variant: int) -> tuple[np.ndarray, np.ndarray]:
    """A mug: a cup (outer wall, rim, inner wall, floor) and a handle, a closed tube on +x with its capped ends
    inside the wall. Body radius/height 0.5/1.0, 0.6/0.8 (wide), 0.4/1.2 (tall); wall 0.06 thick."""
    radius, height = [(0.5, 1.0), (0.6, 0.8), (0.4, 1.2)][variant]
    wall, floor, lo, hi = 0.06, 0.08, -height / 2, height / 2
    cup = _revolve([(0.0, lo), (radius, lo), (radius, hi), (radius - wall, hi), (radius - wall, lo + floor),
                    (0.0, lo + floor)], segments=48)  # fmt: skip
    return _join(cup, _handle(radius, wall, height))


def _handle(radius: float, wall: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    """A capped arc of tube in the xz plane bulging out of +x, both ends in the middle of the cup's wall."""
    bend, tube = 0.25 * height, 0.04
    centre_x = radius - 0.05
    reach = math.acos((radius - wall / 2 - centre_x) / bend)  # end angle: the centreline ends mid-wall
    u = np.linspace(-reach, reach, 33)
    normal = np.column_stack([np.cos(u), np.zeros_like(u), np.sin(u)])
    tangent = np.column_stack([-np.sin(u), np.zeros_like(u), np.cos(u)])
    centre = np.array([centre_x, 0.0, 0.0]) + bend * normal
    return _tube(centre, normal, tangent, tube, sides=16, closed=False)


def _join(*parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Several ``(vertices, faces)`` meshes as one (faces renumbered)."""
    offsets = np.cumsum([0] + [len(v) for v, _ in parts[:-1]])
    return (np.concatenate([v for v, _ in parts]),
            np.concatenate([f + o for (_, f), o in zip(parts, offsets, strict=True)]))  # fmt: skip


_BUILDERS = {"box": _box, "can": _can, "ball": _ball, "cone": _cone, "ring": _ring, "mug": _mug}
