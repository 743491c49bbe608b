"""Randomised scene descriptions: a JSON document drawn from a seed, rendered by :mod:`core.render.render`.

:func:`draw_scene` is pure (numpy only, no renderer): the same seed, settings and mesh library give the same
description, so the randomisation is testable over many seeds without rendering. Every range is a
:class:`RenderSettings` field. Conventions: world Z is up; the camera looks at the origin from ``distance`` at
``elevation`` (degrees above the horizon) and ``azimuth`` (degrees around Z); the horizontal field of view comes from
``focal_mm`` on a 36 mm sensor. An object is placed by drawing where its centre falls in the image (``u, v`` in
[-1, 1] across the frame, up to ``max_truncation`` beyond it) and its depth, then turned into world coordinates;
its size is drawn as a share of the frame's width at that depth.

The description (``scene["objects"][i]``): instance id (1..n, unique), class, class index, mesh name and sha256,
scale, Euler rotation (degrees, XYZ), world position, material (base colour, roughness, metallic, texture);
``scene["camera"]``, ``scene["lights"]`` (type, intensity, colour temperature and its RGB, direction / position),
``scene["environment"]`` (ambient radiance), ``scene["background"]`` (what the render is composed over).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from core.errors import InvalidInput, refuse_unknown_keys, require_all

SCENE_VERSION = 1
SENSOR_MM = 36.0
LIGHT_TYPES = ("sun", "point", "spot")
TEXTURES = ("none", "checker", "image")


def _pair(value, name: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{name} must be a range [low, high] of numbers, got {value!r}") from exc
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise InvalidInput(f"{name} must be a range [low, high] with low <= high, got {value!r}")
    return low, high


@dataclass(frozen=True)
class RenderSettings:
    """Every randomised range of a scene (``(low, high)`` pairs, inclusive) and the render's quality.

    Attributes:
        size: ``(width, height)`` of the render in pixels.
        samples: path-tracing samples per pixel of the RGB image (the label pass always takes one ray per pixel
            centre).
        objects: how many objects per scene.
        object_size: an object's largest side as a share of the frame's width at its depth.
        rotation: Euler angles (degrees) drawn per axis from this range.
        depth: an object's distance from the camera as a multiple of the camera distance.
        max_truncation: the share of an object's silhouette allowed outside the frame (measured on the render).
        min_visible: the share of an object's in-frame silhouette that must stay visible after occlusion (measured).
        camera_distance, camera_elevation (degrees above the horizon), camera_azimuth (degrees), focal_mm (on a 36 mm
            sensor).
        lights: how many lights; light_types: drawn from these; light_intensity: sun irradiance, or point / spot
            intensity at the camera distance (scaled by distance squared); light_kelvin: colour temperature.
        ambient: the constant environment's radiance (fills the shadows).
        base_color: each RGB channel of an object's base colour (linear, 0..1); roughness, metallic: principled BSDF.
        textures: texture kinds drawn per object: ``none``, ``checker``, ``image`` (a patch cut from a background
            image: domain randomisation); texture_scale: UV repeats.
        class_weights: relative frequency of each class (missing: 1); a class-balance plan passes its shares here.
        attempts: scenes drawn (attempt 0, 1, ... of the seed) until one keeps at least one object.
        denoise: smooth the rendered objects' path-tracing noise (OpenCV non-local means on the objects' pixels only;
            the background photo is left as it is). Mitsuba's denoiser needs CUDA (OptiX); this one runs anywhere.
    """

    size: tuple[int, int] = (512, 512)
    samples: int = 64
    objects: tuple[int, int] = (1, 4)
    object_size: tuple[float, float] = (0.2, 0.5)
    rotation: tuple[float, float] = (0.0, 360.0)
    depth: tuple[float, float] = (0.85, 1.15)
    max_truncation: float = 0.3
    min_visible: float = 0.25
    camera_distance: tuple[float, float] = (4.0, 8.0)
    camera_elevation: tuple[float, float] = (5.0, 60.0)
    camera_azimuth: tuple[float, float] = (0.0, 360.0)
    focal_mm: tuple[float, float] = (35.0, 70.0)
    lights: tuple[int, int] = (1, 3)
    light_types: tuple[str, ...] = LIGHT_TYPES
    light_intensity: tuple[float, float] = (1.0, 4.0)
    light_kelvin: tuple[float, float] = (3000.0, 8000.0)
    ambient: tuple[float, float] = (0.15, 0.5)
    base_color: tuple[float, float] = (0.05, 0.9)
    roughness: tuple[float, float] = (0.2, 0.9)
    metallic: tuple[float, float] = (0.0, 0.6)
    textures: tuple[str, ...] = ("none", "checker")
    texture_scale: tuple[float, float] = (2.0, 8.0)
    class_weights: dict = field(default_factory=dict)
    attempts: int = 5
    denoise: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("objects", "lights"):
                low, high = (int(v) for v in _pair(value, f.name))
                object.__setattr__(self, f.name, (low, high))
            elif f.name == "size":
                try:
                    width, height = (int(v) for v in value)
                except (TypeError, ValueError) as exc:
                    raise InvalidInput(f"size must be (width, height) in pixels, got {value!r}") from exc
                object.__setattr__(self, f.name, (width, height))
            elif isinstance(value, (tuple, list)) and f.name not in ("light_types", "textures"):
                object.__setattr__(self, f.name, _pair(value, f.name))
        object.__setattr__(self, "light_types", tuple(str(t) for t in self.light_types))
        object.__setattr__(self, "textures", tuple(str(t) for t in self.textures))
        object.__setattr__(self, "class_weights", {str(k): float(v) for k, v in dict(self.class_weights).items()})
        object.__setattr__(self, "denoise", bool(self.denoise))
        w, h = self.size
        bad_lights = [t for t in self.light_types if t not in LIGHT_TYPES]
        bad_textures = [t for t in self.textures if t not in TEXTURES]
        require_all(
            [
                (16 <= w <= 4096 and 16 <= h <= 4096, f"size must be 16..4096 pixels per side, got {self.size}"),
                (1 <= self.samples <= 4096, f"samples must be 1..4096, got {self.samples}"),
                (self.objects[0] >= 1 and self.objects[1] <= 50, f"objects must lie in 1..50, got {self.objects}"),
                (0 < self.object_size[0] and self.object_size[1] <= 2, f"object_size must lie in (0, 2], got "
                                                                       f"{self.object_size}"),  # fmt: skip
                (0.3 <= self.depth[0] and self.depth[1] <= 3, f"depth must lie in [0.3, 3], got {self.depth}"),
                (0 <= self.max_truncation < 1, f"max_truncation must lie in [0, 1), got {self.max_truncation}"),
                (0 < self.min_visible <= 1, f"min_visible must lie in (0, 1], got {self.min_visible}"),
                (self.camera_distance[0] > 0, f"camera_distance must be positive, got {self.camera_distance}"),
                (-89 <= self.camera_elevation[0] and self.camera_elevation[1] <= 89,
                 f"camera_elevation must lie in [-89, 89] degrees, got {self.camera_elevation}"),  # fmt: skip
                (5 <= self.focal_mm[0] and self.focal_mm[1] <= 500, f"focal_mm must lie in [5, 500], got "
                                                                    f"{self.focal_mm}"),  # fmt: skip
                (self.lights[0] >= 0 and self.lights[1] <= 8, f"lights must lie in 0..8, got {self.lights}"),
                (bool(self.light_types) and not bad_lights,
                 f"light type {bad_lights[:1]} is unknown; accepted: {', '.join(LIGHT_TYPES)}"),  # fmt: skip
                (self.light_intensity[0] >= 0, f"light_intensity must be 0 or more, got {self.light_intensity}"),
                (1000 <= self.light_kelvin[0] and self.light_kelvin[1] <= 40000,
                 f"light_kelvin must lie in [1000, 40000], got {self.light_kelvin}"),  # fmt: skip
                (self.ambient[0] >= 0, f"ambient must be 0 or more, got {self.ambient}"),
                (0 <= self.base_color[0] and self.base_color[1] <= 1, f"base_color must lie in [0, 1], got "
                                                                      f"{self.base_color}"),  # fmt: skip
                (0 <= self.roughness[0] and self.roughness[1] <= 1, f"roughness must lie in [0, 1], got "
                                                                    f"{self.roughness}"),  # fmt: skip
                (0 <= self.metallic[0] and self.metallic[1] <= 1, f"metallic must lie in [0, 1], got {self.metallic}"),
                (bool(self.textures) and not bad_textures,
                 f"texture {bad_textures[:1]} is unknown; accepted: {', '.join(TEXTURES)}"),  # fmt: skip
                (all(v >= 0 for v in self.class_weights.values()), "class_weights must be 0 or more"),
                (self.attempts >= 1, f"attempts must be at least 1, got {self.attempts}"),
            ],
            "render settings",
        )

    def to_json(self) -> dict:
        doc = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in doc.items()}

    @classmethod
    def from_json(cls, doc: dict) -> RenderSettings:
        refuse_unknown_keys(cls, doc, "render settings have")
        return cls(**doc)


# ---- geometry ---------------------------------------------------------------------------------------------------


def fov_degrees(focal_mm: float) -> float:
    """Horizontal field of view (degrees) of ``focal_mm`` on a 36 mm sensor."""
    return math.degrees(2.0 * math.atan(SENSOR_MM / (2.0 * focal_mm)))


def camera_frame(camera: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(origin, forward, right, up)`` of a camera description (float64 3-vectors, unit axes; right x up =
    -forward). Image x grows along ``right``, image y grows against ``up``."""
    el, az, d = math.radians(camera["elevation"]), math.radians(camera["azimuth"]), camera["distance"]
    origin = np.array([d * math.cos(el) * math.cos(az), d * math.cos(el) * math.sin(az), d * math.sin(el)])
    target = np.asarray(camera.get("target", (0.0, 0.0, 0.0)), dtype=np.float64)
    forward = target - origin
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return origin, forward, right, up


def image_to_world(camera: dict, size: tuple[int, int], u: float, v: float, depth: float) -> np.ndarray:
    """The world point seen at normalised image position ``(u, v)`` (-1..1 left to right, top to bottom; v scaled by
    the aspect) at distance ``depth`` along the view axis."""
    origin, forward, right, up = camera_frame(camera)
    half_w = math.tan(math.radians(fov_degrees(camera["focal_mm"])) / 2.0)
    aspect = size[1] / size[0]
    return origin + depth * (forward + u * half_w * right - v * half_w * aspect * up)


def frame_width_at(camera: dict, depth: float) -> float:
    """The width (world units) of the frame at distance ``depth`` from the camera."""
    return 2.0 * depth * math.tan(math.radians(fov_degrees(camera["focal_mm"])) / 2.0)


def kelvin_to_rgb(kelvin: float) -> list[float]:
    """Linear RGB (max channel 1) of a black body at ``kelvin`` (Tanner Helland's fit, 1000-40000 K)."""
    t = kelvin / 100.0
    r = 255.0 if t <= 66 else 329.698727446 * (t - 60) ** -0.1332047592
    g = 99.4708025861 * math.log(t) - 161.1195681661 if t <= 66 else 288.1221695283 * (t - 60) ** -0.0755148492
    b = 255.0 if t >= 66 else (0.0 if t <= 19 else 138.5177312231 * math.log(t - 10) - 305.0447927307)
    srgb = np.clip(np.array([r, g, b]) / 255.0, 0.0, 1.0)
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    return [round(float(c), 6) for c in linear / max(linear.max(), 1e-6)]


# ---- drawing ----------------------------------------------------------------------------------------------------


def _uniform(rng: np.random.Generator, pair) -> float:
    return float(rng.uniform(pair[0], pair[1])) if pair[1] > pair[0] else float(pair[0])


def _integer(rng: np.random.Generator, pair) -> int:
    return int(rng.integers(pair[0], pair[1] + 1))


def _pick_class(rng: np.random.Generator, classes: list[str], weights: dict) -> str:
    w = np.array([weights.get(c, 1.0) for c in classes], dtype=np.float64)
    if w.sum() <= 0:
        raise InvalidInput(f"class_weights give every class of the meshes ({', '.join(classes)}) weight 0")
    return classes[int(rng.choice(len(classes), p=w / w.sum()))]


def draw_camera(rng: np.random.Generator, s: RenderSettings) -> dict:
    return {"distance": _uniform(rng, s.camera_distance), "elevation": _uniform(rng, s.camera_elevation),
            "azimuth": _uniform(rng, s.camera_azimuth), "focal_mm": _uniform(rng, s.focal_mm),
            "sensor_mm": SENSOR_MM, "target": [0.0, 0.0, 0.0]}  # fmt: skip


def draw_light(rng: np.random.Generator, s: RenderSettings, camera: dict) -> dict:
    kind = s.light_types[int(rng.integers(len(s.light_types)))]
    kelvin = _uniform(rng, s.light_kelvin)
    # lights come from the camera's side of the scene (above, around), so objects are not lit from behind only
    el = math.radians(_uniform(rng, (15.0, 80.0)))
    az = math.radians(camera["azimuth"] + _uniform(rng, (-100.0, 100.0)))
    towards_light = [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
    light = {"type": kind, "intensity": _uniform(rng, s.light_intensity), "kelvin": kelvin,
             "rgb": kelvin_to_rgb(kelvin), "direction": [-c for c in towards_light]}  # fmt: skip
    if kind in ("point", "spot"):
        reach = camera["distance"] * _uniform(rng, (0.8, 1.5))
        light["position"] = [reach * c for c in towards_light]
        if kind == "spot":
            light["cutoff_deg"] = _uniform(rng, (25.0, 45.0))
    return light


def draw_material(rng: np.random.Generator, s: RenderSettings) -> dict:
    material = {"base_rgb": [_uniform(rng, s.base_color) for _ in range(3)], "roughness": _uniform(rng, s.roughness),
                "metallic": _uniform(rng, s.metallic)}  # fmt: skip
    texture = s.textures[int(rng.integers(len(s.textures)))]
    material["texture"] = {"kind": texture}
    if texture == "checker":
        material["texture"].update(scale=_uniform(rng, s.texture_scale),
                                   rgb2=[_uniform(rng, s.base_color) for _ in range(3)])  # fmt: skip
    elif texture == "image":
        material["texture"].update(scale=_uniform(rng, s.texture_scale), seed=int(rng.integers(2**31)))
    return material


def draw_object(rng: np.random.Generator, s: RenderSettings, library, camera: dict, instance: int,
                class_index: dict[str, int]) -> dict:  # fmt: skip
    """One object: class (by ``class_weights``), mesh, where its centre falls in the image, depth, size, rotation,
    material. The centre's ``u, v`` stay where an axis-aligned box of the drawn size would be cut by at most
    ``max_truncation`` (the render measures and enforces the real truncation)."""
    name = _pick_class(rng, library.classes(), s.class_weights)
    meshes = library.by_class[name]
    mesh = meshes[int(rng.integers(len(meshes)))]
    share = _uniform(rng, s.object_size)
    reach = max(0.0, 1.0 - share * (1.0 - 2.0 * s.max_truncation))  # beyond it, more than max_truncation is cut
    u, v = _uniform(rng, (-reach, reach)), _uniform(rng, (-reach, reach))
    depth = camera["distance"] * _uniform(rng, s.depth)
    size = share * frame_width_at(camera, depth)
    position = image_to_world(camera, s.size, u, v, depth)
    return {"instance": instance, "class": name, "class_index": class_index[name], "mesh": mesh.name,
            "mesh_sha256": mesh.sha256, "image_uv": [u, v], "depth": depth, "size_share": share, "scale": size,
            "rotation_deg": [_uniform(rng, s.rotation) for _ in range(3)],
            "position": [float(c) for c in position], "material": draw_material(rng, s)}  # fmt: skip


def draw_scene(seed: int, settings: RenderSettings, library, class_names: list[str], background: dict | None = None,
               attempt: int = 0) -> dict:  # fmt: skip
    """The scene description for ``seed`` (see the module docstring). ``class_names``: the output's classes, index
    order (``class_names[0]`` is the background); every class of ``library`` must be among them.

    Raises:
        InvalidInput: the library has no mesh, or holds classes not in ``class_names``.
    """
    classes = library.classes()
    if not classes:
        raise InvalidInput("the mesh library holds no usable mesh; give a folder with one sub-folder of mesh files "
                           "per class (OBJ, PLY, STL, GLB / glTF) or use the bundled meshes")  # fmt: skip
    missing = [c for c in classes if c not in class_names[1:]]
    if missing:
        raise InvalidInput(f"mesh classes {missing} are not among the output's classes {class_names[1:]}")
    index = {name: i for i, name in enumerate(class_names)}
    rng = np.random.default_rng([int(seed), int(attempt)])
    camera = draw_camera(rng, settings)
    n_objects = _integer(rng, settings.objects)
    objects = [draw_object(rng, settings, library, camera, k + 1, index) for k in range(n_objects)]
    lights = [draw_light(rng, settings, camera) for _ in range(_integer(rng, settings.lights))]
    return {"version": SCENE_VERSION, "seed": int(seed), "attempt": int(attempt), "size": list(settings.size),
            "samples": settings.samples, "camera": camera, "lights": lights,
            "environment": {"ambient": _uniform(rng, settings.ambient)}, "objects": objects,
            "background": background or {"kind": "plain"}, "classes": list(class_names)}  # fmt: skip


def scene_digest(scene: dict) -> str:
    """sha256 of the scene's canonical JSON (sorted keys): equal digests, equal descriptions."""
    return hashlib.sha256(json.dumps(scene, sort_keys=True).encode()).hexdigest()
