"""Render a scene description (:mod:`core.render.scene`) with Mitsuba 3: an anti-aliased RGB image composed over its
background, and exact label and instance maps.

**Exact labels.** The label pass renders a second scene with the same geometry in which each object's BSDF is a
diffuse reflectance encoding its instance id (``id / 1000`` in red), through Mitsuba's ``aov`` integrator
(``albedo``), one ray through each pixel's centre (stratified sampler, no jitter) and a box filter: every pixel holds
exactly one object's code or 0, with no blending at edges (so the front object wins where objects overlap, and
occluded parts carry what is visible). Checked against an analytic silhouette in the tests.

**Settling.** Objects drawn too far outside the frame or hidden behind others are removed, measured on the label
pass: truncation = the share of the object's projected silhouette outside the frame (its triangles projected and
filled on a padded canvas), visibility = its visible pixels / its in-frame silhouette. Removed objects are listed
with the reason in ``scene["removed"]``; objects left with zero visible pixels never count. A scene left with no
object is drawn again (next attempt).

**Background labels.** ``plain`` (a procedural backdrop) and ``folder`` (a folder declared background-only): 0
outside the objects; ``sample`` (a labelled dataset sample): its label map kept outside the objects; ``unlabelled``
(an image without labels): 255 (ignore) outside the objects, never 0.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.errors import Cancelled, InvalidInput
from core.render.engine import load_mitsuba
from core.render.scene import RenderSettings, camera_frame, draw_scene, fov_degrees

IGNORE = 255
ID_SCALE = 1000.0  # label-pass reflectance = instance id / ID_SCALE (at most 999 objects)


@dataclass
class RenderResult:
    """One rendered sample.

    Attributes:
        image: ``H x W x 3 uint8`` sRGB, the render composed over its background.
        label_map: ``H x W uint8`` class indices; 255 where unknown (an unlabelled background).
        instance_map: ``H x W uint8`` instance ids (0 where no rendered object).
        scene: the scene description as rendered (objects kept, with their measured ``visible_pixels``,
            ``truncation`` and ``visible_share``; ``removed`` objects with reasons).
        seconds: wall time of the label passes (``label``, settling included) and of the RGB render (``rgb``); kept
            out of ``scene`` so that the same seed writes the same files.
    """

    image: np.ndarray
    label_map: np.ndarray
    instance_map: np.ndarray
    scene: dict
    seconds: dict


# ---- geometry of an object -------------------------------------------------------------------------------------


def rotation_matrix(degrees_xyz) -> np.ndarray:
    """``3 x 3`` float64 rotation of Euler angles (degrees) applied X, then Y, then Z."""
    rx, ry, rz = (math.radians(a) for a in degrees_xyz)
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return z @ y @ x


def placed_vertices(mesh, obj: dict, vertices: np.ndarray | None = None) -> np.ndarray:
    """``N x 3`` float64 world vertices of ``mesh`` (normalised: largest side 1; or ``vertices`` in its frame)
    scaled, rotated and moved as ``obj`` says."""
    v = (mesh.vertices if vertices is None else vertices).astype(np.float64) * float(obj["scale"])
    return v @ rotation_matrix(obj["rotation_deg"]).T + np.asarray(obj["position"], dtype=np.float64)


def project(points: np.ndarray, camera: dict, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (``N x 2`` float64, pixel centres at +0.5) and depths (``N``) of world points."""
    origin, forward, right, up = camera_frame(camera)
    rel = points - origin
    depth = rel @ forward
    half_w = math.tan(math.radians(fov_degrees(camera["focal_mm"])) / 2.0)
    w, h = size
    safe = np.maximum(depth, 1e-9)
    x = (rel @ right) / (safe * half_w)  # -1..1 across the width
    y = (rel @ up) / (safe * half_w)  # the same units: square pixels
    px = (x + 1.0) * 0.5 * w
    py = h * 0.5 - y * 0.5 * w
    return np.stack([px, py], axis=1), depth


def silhouette_areas(mesh, obj: dict, camera: dict, size: tuple[int, int], pad: int) -> tuple[int, int]:
    """``(in-frame pixels, all pixels)`` of the object's silhouette alone (its triangles projected and filled on a
    canvas ``pad`` pixels wider on each side). Triangles behind the camera are left out."""
    w, h = size
    pts, depth = project(placed_vertices(mesh, obj), camera, size)
    tris = mesh.faces[(depth[mesh.faces] > 1e-6).all(axis=1)]
    canvas = np.zeros((h + 2 * pad, w + 2 * pad), np.uint8)
    if len(tris):
        polys = np.round((pts[tris] + pad) * 16).astype(np.int32)  # 4 fractional bits: sub-pixel accurate fill
        cv2.fillPoly(canvas, list(polys), 1, lineType=cv2.LINE_8, shift=4)
    inside = int(canvas[pad:pad + h, pad:pad + w].sum())
    return inside, int(canvas.sum())


# ---- Mitsuba scene dictionaries ----------------------------------------------------------------------------------


CREASE_DEGREES = 30.0  # edges sharper than this stay sharp; smoother surfaces are shaded smooth


@functools.lru_cache(maxsize=256)
def shading_mesh(mesh) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(vertices N x 3 float64, faces M x 3 int32, unit normals N x 3 float64)`` of ``mesh`` with vertices split
    along creases sharper than :data:`CREASE_DEGREES`, so a box keeps its edges and a ball shades round. The
    geometry (every triangle's position) is unchanged, so labels are too."""
    import trimesh

    tri = trimesh.Trimesh(mesh.vertices.astype(np.float64), mesh.faces, process=False)
    smooth = trimesh.graph.smooth_shade(tri, angle=math.radians(CREASE_DEGREES), facet_minarea=None)
    normals = np.asarray(smooth.vertex_normals, dtype=np.float64)
    return np.asarray(smooth.vertices, dtype=np.float64), np.asarray(smooth.faces, dtype=np.int32), normals


def _write_ply(path: Path, vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, normals: np.ndarray) -> None:
    """A binary little-endian PLY with positions, normals, texture coordinates and triangles."""
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {len(vertices)}\nproperty float x\nproperty float y\nproperty float z\n"
              "property float nx\nproperty float ny\nproperty float nz\nproperty float u\nproperty float v\n"
              f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n")  # fmt: skip
    vert = np.concatenate([vertices.astype(np.float32), normals.astype(np.float32), uv.astype(np.float32)], axis=1)
    face = np.zeros(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    face["n"], face["i"] = 3, faces.astype(np.int32)
    path.write_bytes(header.encode("ascii") + vert.astype("<f4").tobytes() + face.tobytes())


def spherical_uv(vertices: np.ndarray) -> np.ndarray:
    """``N x 2`` texture coordinates of normalised vertices by spherical projection (any mesh has them)."""
    v = vertices - vertices.mean(axis=0)
    r = np.linalg.norm(v, axis=1) + 1e-12
    u = 0.5 + np.arctan2(v[:, 1], v[:, 0]) / (2 * math.pi)
    t = 0.5 + np.arcsin(np.clip(v[:, 2] / r, -1, 1)) / math.pi
    return np.stack([u, t], axis=1)


def _rgb(value) -> dict:
    return {"type": "rgb", "value": [float(c) for c in value]}


def _bsdf(material: dict, texture_file: str | None) -> dict:
    texture = material.get("texture", {"kind": "none"})
    base: dict = _rgb(material["base_rgb"])
    if texture["kind"] == "checker":
        s = float(texture["scale"])
        base = {"type": "checkerboard", "color0": _rgb(material["base_rgb"]), "color1": _rgb(texture["rgb2"]),
                "to_uv": _scale_uv(s)}  # fmt: skip
    elif texture["kind"] == "image" and texture_file:
        base = {"type": "bitmap", "filename": texture_file, "to_uv": _scale_uv(float(texture["scale"]))}
    return {"type": "principled", "base_color": base, "roughness": float(material["roughness"]),
            "metallic": float(material["metallic"])}  # fmt: skip


def _scale_uv(s: float):
    mi = load_mitsuba()
    return mi.ScalarTransform4f().scale([s, s, 1.0])


def _light(light: dict, camera: dict) -> dict:
    mi = load_mitsuba()
    color = [c * float(light["intensity"]) for c in light["rgb"]]
    if light["type"] == "sun":
        return {"type": "directional", "direction": light["direction"], "irradiance": _rgb(color)}
    reach2 = float(np.dot(light["position"], light["position"]))
    power = _rgb([c * reach2 for c in color])
    if light["type"] == "point":
        return {"type": "point", "position": light["position"], "intensity": power}
    return {"type": "spot", "intensity": power, "cutoff_angle": float(light["cutoff_deg"]),
            "to_world": mi.ScalarTransform4f().look_at(origin=light["position"], target=[0, 0, 0], up=[0, 0, 1])}  # fmt: skip


def _sensor(camera: dict, size: tuple[int, int], spp: int, label: bool) -> dict:
    mi = load_mitsuba()
    origin, forward, _, up = camera_frame(camera)
    target = origin + forward
    sampler = {"type": "stratified", "sample_count": 1, "jitter": False} if label else \
        {"type": "independent", "sample_count": int(spp)}  # fmt: skip
    return {"type": "perspective", "fov": fov_degrees(camera["focal_mm"]), "fov_axis": "x",
            "to_world": mi.ScalarTransform4f().look_at(origin=origin.tolist(), target=target.tolist(), up=up.tolist()),
            "sampler": sampler,
            "film": {"type": "hdrfilm", "width": int(size[0]), "height": int(size[1]), "rfilter": {"type": "box"},
                     "pixel_format": "rgb" if label else "rgba"}}  # fmt: skip


def _scene_dicts(scene: dict, meshes: dict, folder: Path, textures: dict[int, str]) -> tuple[dict, dict]:
    """``(beauty, label)`` Mitsuba scene dictionaries of a description (mesh files written to ``folder``)."""
    size = tuple(scene["size"])
    beauty = {"type": "scene", "integrator": {"type": "path", "max_depth": 6, "hide_emitters": True},
              "sensor": _sensor(scene["camera"], size, scene["samples"], False),
              "ambient": {"type": "constant", "radiance": _rgb([scene["environment"]["ambient"]] * 3)}}  # fmt: skip
    label = {"type": "scene", "sensor": _sensor(scene["camera"], size, 1, True)}
    for k, light in enumerate(scene["lights"]):
        beauty[f"light_{k}"] = _light(light, scene["camera"])
    for obj in scene["objects"]:
        mesh = meshes[obj["mesh"]]
        path = folder / f"object_{obj['instance']}.ply"
        if not path.is_file():  # an object keeps its placement through settling: its file is written once
            vertices, faces, normals = shading_mesh(mesh)
            turned = normals @ rotation_matrix(obj["rotation_deg"]).T
            _write_ply(path, placed_vertices(mesh, obj, vertices), faces, spherical_uv(vertices), turned)
        shape = {"type": "ply", "filename": str(path), "face_normals": False}
        beauty[f"object_{obj['instance']}"] = {**shape, "bsdf": _bsdf(obj["material"], textures.get(obj["instance"]))}
        code = {"type": "diffuse", "reflectance": _rgb([obj["instance"] / ID_SCALE, 0.0, 0.0])}
        label[f"object_{obj['instance']}"] = {**shape, "bsdf": code}
    return beauty, label


def label_pass(label_dict: dict) -> np.ndarray:
    """``H x W uint16`` instance ids (0: no object) from the label scene (one ray per pixel centre)."""
    mi = load_mitsuba()
    with _renderer_errors("label pass"):
        scene = mi.load_dict(label_dict)
        aov = mi.load_dict({"type": "aov", "aovs": "albedo:albedo"})
        raw = np.array(mi.render(scene, integrator=aov, spp=1))[..., 0]
    ids = np.rint(raw * ID_SCALE)
    if np.abs(raw * ID_SCALE - ids).max(initial=0) > 1e-3:
        raise RuntimeError("the label pass returned blended ids; the label sensor must take one unjittered sample")
    return ids.astype(np.uint16)


def beauty_pass(beauty_dict: dict, seed: int) -> np.ndarray:
    """``H x W x 4 float32`` linear RGB (premultiplied by coverage) and coverage alpha."""
    mi = load_mitsuba()
    with _renderer_errors("image"):
        scene = mi.load_dict(beauty_dict)
        return np.array(mi.render(scene, seed=int(seed) & 0x7FFFFFFF), dtype=np.float32)


@contextlib.contextmanager
def _renderer_errors(what: str):
    """Mitsuba's own errors (a mesh it cannot load, a texture it cannot read) as :class:`InvalidInput`, so a batch
    reports the sample and goes on."""
    try:
        yield
    except (RuntimeError, ValueError, TypeError) as exc:
        raise InvalidInput(f"the renderer failed on this scene's {what}: {str(exc).strip().splitlines()[-1][:300]}") from exc


# ---- composing -------------------------------------------------------------------------------------------------


def srgb_to_linear(image: np.ndarray) -> np.ndarray:
    c = image.astype(np.float32) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb8(linear: np.ndarray) -> np.ndarray:
    c = np.clip(linear, 0.0, 1.0)
    s = np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055)
    return np.clip(np.rint(s * 255.0), 0, 255).astype(np.uint8)


def compose(rgba: np.ndarray, background: np.ndarray, denoise: bool = False) -> np.ndarray:
    """The render (premultiplied linear RGBA, ``H x W x 4``) over ``background`` (``H x W x 3 uint8`` sRGB), in
    linear light; returns ``H x W x 3 uint8`` sRGB. ``denoise``: non-local means on the result, blended in by the
    objects' coverage (the background keeps its own pixels)."""
    alpha = np.clip(rgba[..., 3:4], 0.0, 1.0)
    image = linear_to_srgb8(rgba[..., :3] + srgb_to_linear(background) * (1.0 - alpha))
    if not denoise:
        return image
    smooth = cv2.fastNlMeansDenoisingColored(image, None, 6, 6, 5, 15)
    return np.clip(np.rint(smooth * alpha + image * (1.0 - alpha)), 0, 255).astype(np.uint8)


def background_labels(kind: str, size: tuple[int, int], label_map: np.ndarray | None) -> np.ndarray:
    """The label map outside the objects for a background of ``kind`` (see the module docstring)."""
    w, h = size
    if kind in ("plain", "folder"):
        return np.zeros((h, w), np.uint8)
    if kind == "sample":
        if label_map is None or label_map.shape != (h, w):
            raise InvalidInput("a labelled-sample background needs its label map at the render's size")
        return label_map.astype(np.uint8)
    if kind == "unlabelled":
        return np.full((h, w), IGNORE, np.uint8)
    raise InvalidInput(f"background kind {kind!r} is unknown; accepted: plain, folder, sample, unlabelled")


# ---- one render --------------------------------------------------------------------------------------------------


def _settle(scene: dict, meshes: dict, folder: Path, settings: RenderSettings) -> np.ndarray:
    """Remove objects beyond the truncation / visibility limits (recorded in ``scene["removed"]``), re-rendering
    the label pass after each removal round; returns the final instance map (``uint16``)."""
    size = tuple(scene["size"])
    pad = max(size)
    scene.setdefault("removed", [])
    for _ in range(4):
        _, label_dict = _scene_dicts(scene, meshes, folder, {})
        ids = label_pass(label_dict)
        counts = np.bincount(ids.ravel(), minlength=len(scene["objects"]) + 2)
        keep, removed = [], []
        for obj in scene["objects"]:
            inside, total = silhouette_areas(meshes[obj["mesh"]], obj, scene["camera"], size, pad)
            visible = int(counts[obj["instance"]]) if obj["instance"] < len(counts) else 0
            obj["visible_pixels"] = visible
            obj["truncation"] = round(1.0 - inside / total, 4) if total else 1.0
            obj["visible_share"] = round(min(1.0, visible / inside), 4) if inside else 0.0
            why = None
            if visible == 0:
                why = "no visible pixel"
            elif obj["truncation"] > settings.max_truncation:
                why = f"truncation {obj['truncation']:.2f} > max_truncation {settings.max_truncation}"
            elif obj["visible_share"] < settings.min_visible:
                why = f"visible share {obj['visible_share']:.2f} < min_visible {settings.min_visible}"
            (removed if why else keep).append((obj, why))
        if not removed:
            return ids
        scene["objects"] = [o for o, _ in keep]
        scene["removed"] += [{"instance": o["instance"], "class": o["class"], "why": why} for o, why in removed]
        if not scene["objects"]:
            return np.zeros((size[1], size[0]), np.uint16)
    _, label_dict = _scene_dicts(scene, meshes, folder, {})
    return label_pass(label_dict)


def _texture_files(scene: dict, background: np.ndarray, folder: Path) -> dict[int, str]:
    """Patches of the background image for objects whose texture kind is ``image`` (domain randomisation)."""
    from PIL import Image

    files = {}
    h, w = background.shape[:2]
    for obj in scene["objects"]:
        texture = obj["material"].get("texture", {})
        if texture.get("kind") != "image":
            continue
        rng = np.random.default_rng(int(texture["seed"]))
        side = max(8, min(h, w) // 3)
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        path = folder / f"texture_{obj['instance']}.png"
        Image.fromarray(background[y:y + side, x:x + side]).save(path)
        files[obj["instance"]] = str(path)
    return files


def render_scene(scene: dict, meshes: dict, settings: RenderSettings, background: np.ndarray,
                 background_label_map: np.ndarray | None = None, cancel=None) -> RenderResult:  # fmt: skip
    """Render ``scene`` (settled: objects beyond the limits removed) over ``background`` (``H x W x 3 uint8``, the
    render's size). ``meshes``: mesh name -> :class:`core.render.meshes.Mesh`. The description is copied, not
    changed."""
    scene = copy.deepcopy(scene)
    size = tuple(scene["size"])
    if background.shape[:2] != (size[1], size[0]):
        raise InvalidInput(f"background is {background.shape[1]} x {background.shape[0]}, the render {size[0]} x "
                           f"{size[1]}; resize it first")  # fmt: skip
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="segstudio_render_") as tmp:
        folder = Path(tmp)
        ids = _settle(scene, meshes, folder, settings)
        t1 = time.perf_counter()
        if cancel is not None and cancel.cancelled:
            raise Cancelled("rendering was cancelled")
        beauty_dict, _ = _scene_dicts(scene, meshes, folder, _texture_files(scene, background, folder))
        rgba = beauty_pass(beauty_dict, scene["seed"] * 31 + scene["attempt"])
    labels = background_labels(scene["background"]["kind"], size, background_label_map)
    class_of = np.zeros(int(ids.max(initial=0)) + 1, np.uint8)
    for obj in scene["objects"]:
        class_of[obj["instance"]] = obj["class_index"]
    label_map = np.where(ids > 0, class_of[ids], labels).astype(np.uint8)
    seconds = {"label": t1 - t0, "rgb": time.perf_counter() - t1}
    image = compose(rgba, background, settings.denoise)
    return RenderResult(image, label_map, ids.astype(np.uint8), scene, seconds)


def render_seed(seed: int, settings: RenderSettings, library, class_names: list[str], background: np.ndarray,
                background_doc: dict, background_label_map: np.ndarray | None = None, cancel=None) -> RenderResult:  # fmt: skip
    """Draw the scene of ``seed`` and render it; a scene whose objects were all removed is drawn again (attempts
    ``0 .. settings.attempts - 1``).

    Raises:
        InvalidInput: no attempt kept an object (the limits are too strict for the ranges).
    """
    meshes = {m.name: m for group in library.by_class.values() for m in group}
    for attempt in range(settings.attempts):
        scene = draw_scene(seed, settings, library, class_names, background_doc, attempt)
        result = render_scene(scene, meshes, settings, background, background_label_map, cancel)
        if result.scene["objects"]:
            return result
    raise InvalidInput(f"seed {seed}: no object stayed inside the truncation / visibility limits in "
                       f"{settings.attempts} attempts; widen max_truncation or min_visible, or shrink object_size")  # fmt: skip
