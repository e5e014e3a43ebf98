"""Camera geometry with hand-computed numbers.

The default mounting (xyz = [0.5, 0, 0.8], rpy = [pi, 0, -pi/2]) looks straight down from
0.8 m: optical (x, y, z) -> base (0.5 - y, -x, 0.8 - z), so image +u (right) is base -y,
image +v (down) is base -x, and the optical axis is base -z.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from clip_vla.core.config import ConfigError, GeometryConfig
from clip_vla.core.geometry import (
    GeometryError,
    LocateResult,
    RigidTransform,
    backproject,
    camera_to_base_from_config,
    depth_to_metres,
    grasp_yaw,
    intersect_ray_plane,
    intrinsics_from_config,
    locate,
    mask_principal_axis,
    pixel_ray,
    project,
    robust_depth,
    table_plane_point,
    wrap_angle,
)
from clip_vla.core.types import Intrinsics

K = Intrinsics(fx=500.0, fy=500.0, cx=320.0, cy=240.0)
SHAPE = (480, 640)
DOWN_R = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])


@pytest.fixture
def down() -> RigidTransform:
    return camera_to_base_from_config(GeometryConfig())


def rect_mask(center, length, width, angle_deg, shape=SHAPE) -> np.ndarray:
    """A filled rectangle whose long side points along image angle atan2(dv, du) = angle_deg."""
    a = math.radians(angle_deg)
    along = np.array([math.cos(a), math.sin(a)]) * length / 2
    across = np.array([-math.sin(a), math.cos(a)]) * width / 2
    c = np.asarray(center, dtype=float)
    corners = np.array([c + along + across, c + along - across, c - along - across, c - along + across])
    img = np.zeros(shape, np.uint8)
    cv2.fillPoly(img, [np.round(corners).astype(np.int32)], 1)
    return img.astype(bool)


def disc_mask(center, radius, shape=SHAPE) -> np.ndarray:
    img = np.zeros(shape, np.uint8)
    cv2.circle(img, (int(center[0]), int(center[1])), int(radius), 1, -1)
    return img.astype(bool)


def axis_error(a: float, b: float) -> float:
    """Distance between two axis directions (equal modulo pi)."""
    return abs((a - b + math.pi / 2) % math.pi - math.pi / 2)


# --------------------------------------------------------------------------- projection
def test_backproject_by_hand():
    # (420 - 320) * 2 / 500 = 0.4 ; (140 - 240) * 2 / 500 = -0.4
    np.testing.assert_allclose(backproject(420, 140, 2.0, K), [0.4, -0.4, 2.0])
    np.testing.assert_allclose(backproject(320, 240, 1.5, K), [0.0, 0.0, 1.5])
    assert project(backproject(420, 140, 2.0, K), K) == pytest.approx((420.0, 140.0))
    assert project([0.0, 0.0, -1.0], K) is None


def test_pixel_ray_by_hand():
    ray = pixel_ray(420, 140, K)
    np.testing.assert_allclose(ray, np.array([0.2, -0.2, 1.0]) / math.sqrt(1.08))
    assert np.linalg.norm(ray) == pytest.approx(1.0)
    np.testing.assert_allclose(pixel_ray(320, 240, K), [0.0, 0.0, 1.0])
    # z is along the optical axis, not along the ray: the back-projected point is the ray scaled to z
    p = backproject(420, 140, 2.0, K)
    np.testing.assert_allclose(p / np.linalg.norm(p), ray)


# --------------------------------------------------------------------------- transforms
def test_rpy_elementary_rotations():
    yaw90 = RigidTransform.from_xyz_rpy([0, 0, 0], [0, 0, math.pi / 2])
    np.testing.assert_allclose(yaw90.apply([1.0, 0, 0]), [0, 1, 0], atol=1e-12)  # x -> y
    roll90 = RigidTransform.from_xyz_rpy([0, 0, 0], [math.pi / 2, 0, 0])
    np.testing.assert_allclose(roll90.apply([0, 1.0, 0]), [0, 0, 1], atol=1e-12)  # y -> z
    pitch90 = RigidTransform.from_xyz_rpy([0, 0, 0], [0, math.pi / 2, 0])
    np.testing.assert_allclose(pitch90.apply([0, 0, 1.0]), [1, 0, 0], atol=1e-12)  # z -> x


def test_rpy_order_is_fixed_axis():
    # R = Rz(yaw) Ry(pitch) Rx(roll): roll first, then yaw. x -> y, y -> z, z -> x.
    t = RigidTransform.from_xyz_rpy([1.0, 2.0, 3.0], [math.pi / 2, 0, math.pi / 2])
    np.testing.assert_allclose(t.rotation, [[0, 0, 1], [1, 0, 0], [0, 1, 0]], atol=1e-12)
    np.testing.assert_allclose(t.apply([0, 0, 0]), [1, 2, 3])
    np.testing.assert_allclose(t.apply([[1, 0, 0], [0, 1, 0]]), [[1, 3, 3], [1, 2, 4]], atol=1e-12)


def test_default_camera_looks_down(down):
    np.testing.assert_allclose(down.rotation, DOWN_R, atol=1e-12)
    np.testing.assert_allclose(down.translation, [0.5, 0.0, 0.8])
    np.testing.assert_allclose(down.apply([0, 0, 0.8]), [0.5, 0, 0], atol=1e-12)  # 0.8 m ahead = the table
    np.testing.assert_allclose(down.apply_direction([1.0, 0, 0]), [0, -1, 0], atol=1e-12)  # +u -> -y
    np.testing.assert_allclose(down.apply_direction([0, 1.0, 0]), [-1, 0, 0], atol=1e-12)  # +v -> -x


def test_quaternion_matches_rpy():
    s = math.sqrt(0.5)
    np.testing.assert_allclose(
        RigidTransform.from_xyz_quat([0, 0, 0], [0, 0, s, s]).rotation,
        RigidTransform.from_xyz_rpy([0, 0, 0], [0, 0, math.pi / 2]).rotation,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        RigidTransform.from_xyz_quat([1, 2, 3], [2 * s, 0, 0, 2 * s]).matrix(),  # normalised
        RigidTransform.from_xyz_rpy([1, 2, 3], [math.pi / 2, 0, 0]).matrix(),
        atol=1e-12,
    )
    with pytest.raises(ValueError):
        RigidTransform.from_xyz_quat([0, 0, 0], [0, 0, 0, 0])


def test_inverse_and_compose():
    rng = np.random.default_rng(3)
    a = RigidTransform.from_xyz_rpy(rng.normal(size=3), rng.uniform(-3, 3, 3))
    b = RigidTransform.from_xyz_rpy(rng.normal(size=3), rng.uniform(-3, 3, 3))
    pts = rng.normal(size=(10, 3))
    np.testing.assert_allclose((a @ b).apply(pts), a.apply(b.apply(pts)), atol=1e-12)
    np.testing.assert_allclose((a @ b).matrix(), a.matrix() @ b.matrix(), atol=1e-12)
    np.testing.assert_allclose((a @ a.inverse()).matrix(), np.eye(4), atol=1e-12)
    np.testing.assert_allclose((a.inverse() @ a).matrix(), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(a.inverse().apply(a.apply(pts)), pts, atol=1e-12)
    np.testing.assert_allclose(RigidTransform.identity().apply(pts), pts)
    np.testing.assert_allclose(a.apply_direction([1.0, 0, 0]), a.rotation[:, 0])


def test_from_matrix_round_trip_and_row_major():
    t = RigidTransform.from_xyz_rpy([0.1, -0.2, 0.3], [0.3, -0.2, 1.1])
    np.testing.assert_allclose(RigidTransform.from_matrix(t.matrix()).matrix(), t.matrix(), atol=1e-12)
    flat = [0, -1, 0, 0.5, -1, 0, 0, 0.0, 0, 0, -1, 0.8, 0, 0, 0, 1]
    m = RigidTransform.from_matrix(flat)
    np.testing.assert_allclose(m.rotation, DOWN_R)
    np.testing.assert_allclose(m.translation, [0.5, 0.0, 0.8])


@pytest.mark.parametrize(
    "bad",
    [
        np.diag([2.0, 2.0, 2.0, 1.0]),  # scaled
        np.array([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]),  # sheared
        np.diag([1.0, 1.0, -1.0, 1.0]),  # reflection
        np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1.0]]),  # not homogeneous
        np.eye(3),  # wrong size
    ],
)
def test_from_matrix_rejects(bad):
    with pytest.raises(ValueError):
        RigidTransform.from_matrix(bad)


def test_from_matrix_accepts_hand_typed_rotation():
    c = 0.7071  # four decimals, as people type them
    m = RigidTransform.from_matrix([[c, -c, 0, 0], [c, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(m.rotation @ m.rotation.T, np.eye(3), atol=1e-12)


# --------------------------------------------------------------------------- config
def test_camera_to_base_from_config():
    unset = GeometryConfig(camera_to_base_matrix=[0.0])  # the ROS "unset" sentinel
    np.testing.assert_allclose(camera_to_base_from_config(unset).rotation, DOWN_R, atol=1e-12)
    eye = camera_to_base_from_config(GeometryConfig(camera_to_base_matrix=list(np.eye(4).ravel())))
    np.testing.assert_allclose(eye.matrix(), np.eye(4))
    with pytest.raises(ConfigError, match="camera_to_base_xyz"):
        camera_to_base_from_config(GeometryConfig(camera_to_base_xyz=[0.5, 0.0]))
    with pytest.raises(ConfigError, match="camera_to_base_rpy"):
        camera_to_base_from_config(GeometryConfig(camera_to_base_rpy=[0.0]))
    with pytest.raises(ConfigError):
        camera_to_base_from_config(GeometryConfig(camera_to_base_matrix=[2.0] * 16))


def test_intrinsics_from_config():
    assert intrinsics_from_config(GeometryConfig()) is None
    assert intrinsics_from_config(GeometryConfig(intrinsics=[0.0])) is None
    with pytest.raises(ConfigError, match="geometry.intrinsics"):  # was silently "unset"
        GeometryConfig(intrinsics=[0.0, 500.0, 320.0, 240.0])
    assert intrinsics_from_config(GeometryConfig(intrinsics=[500, 500, 320, 240])) == K


# --------------------------------------------------------------------------- depth
def test_depth_to_metres_uint16():
    raw = np.array([[0, 1000, 65535], [30, 500, 2000]], dtype=np.uint16)
    m = depth_to_metres(raw)
    assert m.dtype == np.float32
    expected = np.array([[np.nan, 1.0, np.nan], [np.nan, 0.5, 2.0]])  # 65.5 m too far, 3 cm too close
    np.testing.assert_allclose(m, expected, equal_nan=True)
    fine = depth_to_metres(raw, depth_scale=0.0001, depth_max=0.15)  # 0.05 m is exactly depth_min: kept
    np.testing.assert_allclose(fine, [[np.nan, 0.1, np.nan], [np.nan, 0.05, np.nan]], equal_nan=True, rtol=1e-6)


def test_depth_to_metres_float():
    raw = np.array([[np.nan, 1.25, np.inf], [0.0, -1.0, 11.0]], dtype=np.float32)
    m = depth_to_metres(raw)
    assert m.dtype == np.float32
    np.testing.assert_allclose(m, [[np.nan, 1.25, np.nan], [np.nan, np.nan, np.nan]], equal_nan=True)
    assert raw[1, 2] == 11.0  # the input is not modified
    assert depth_to_metres(raw.astype(np.float64)).dtype == np.float32
    with pytest.raises(ValueError, match="dtype"):
        depth_to_metres(np.ones((2, 2), dtype=np.int32))


def test_robust_depth_ignores_invalid_and_outliers():
    depth = np.full((20, 20), 0.3, dtype=np.float32)  # outside the mask: must not count
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    depth[5:15, 5:15] = 1.0
    depth[5, 5:9] = [50.0, 80.0, 0.001, 120.0]  # wild readings
    depth[6, 5:8] = [np.nan, 0.0, np.inf]
    assert robust_depth(depth, mask) == pytest.approx(1.0)
    assert robust_depth(depth, mask, "percentile_25") == pytest.approx(1.0)
    ramp = np.linspace(0.9, 1.1, 100).reshape(10, 10)
    full = np.ones((10, 10), bool)
    assert robust_depth(ramp, full, "median") == pytest.approx(1.0)
    assert robust_depth(ramp, full, "percentile_25") == pytest.approx(0.95)
    assert robust_depth(ramp, full, "min_valid") == pytest.approx(0.91)
    with pytest.raises(ValueError, match="statistic"):
        robust_depth(ramp, full, "mean")


def test_robust_depth_too_few_valid_pixels():
    depth = np.full((10, 10), np.nan)
    mask = np.ones((10, 10), bool)
    depth[0, :4] = 1.0
    assert robust_depth(depth, mask, min_valid=5) is None
    depth[0, 4] = 1.0
    assert robust_depth(depth, mask, min_valid=5) == pytest.approx(1.0)
    assert robust_depth(depth, np.zeros((10, 10), bool)) is None
    with pytest.raises(ValueError):
        robust_depth(depth, np.ones((5, 5), bool))


# --------------------------------------------------------------------------- planes
def test_intersect_ray_plane():
    np.testing.assert_allclose(intersect_ray_plane([0, 0, 1], [0, 0, -1], [0, 0, 1], 0.0), [0, 0, 0])
    np.testing.assert_allclose(intersect_ray_plane([0, 0, 1], [1, 0, -1], [0, 0, 2], 0.4), [0.8, 0, 0.2])
    assert intersect_ray_plane([0, 0, 1], [1, 0, 0], [0, 0, 1], 0.0) is None  # parallel
    assert intersect_ray_plane([0, 0, 1], [0, 0, 1], [0, 0, 1], 0.0) is None  # behind


def test_table_plane_point_downward_camera(down):
    # ray (0.2, -0.2, 1) reaches the table at optical z = 0.8: (0.16, -0.16, 0.8) -> base (0.66, -0.16, 0)
    p = table_plane_point(420, 140, K, down, [0, 0, 1], 0.0)
    np.testing.assert_allclose(p, [0.16, -0.16, 0.8], atol=1e-12)
    np.testing.assert_allclose(down.apply(p), [0.66, -0.16, 0.0], atol=1e-12)
    centre = table_plane_point(320, 240, K, down, [0, 0, 1], 0.1)  # raised table: 0.7 m away
    np.testing.assert_allclose(down.apply(centre), [0.5, 0.0, 0.1], atol=1e-12)


def test_table_plane_point_horizontal_camera():
    # optical z -> base x, optical x -> base -y, optical y -> base -z (the usual rpy = -pi/2, 0, -pi/2)
    fwd = RigidTransform.from_matrix([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0.5], [0, 0, 0, 1]])
    np.testing.assert_allclose(
        RigidTransform.from_xyz_rpy([0, 0, 0.5], [-math.pi / 2, 0, -math.pi / 2]).matrix(),
        fwd.matrix(),
        atol=1e-12,
    )
    assert table_plane_point(320, 240, K, fwd, [0, 0, 1], 0.0) is None  # horizon: parallel
    assert table_plane_point(320, 100, K, fwd, [0, 0, 1], 0.0) is None  # above the horizon
    p = table_plane_point(320, 490, K, fwd, [0, 0, 1], 0.0)  # 250 px below: 0.5 m down at 1 m ahead
    np.testing.assert_allclose(fwd.apply(p), [1.0, 0.0, 0.0], atol=1e-12)


# --------------------------------------------------------------------------- orientation
def test_mask_principal_axis():
    assert mask_principal_axis(np.zeros(SHAPE, bool)) is None
    angle, elong = mask_principal_axis(rect_mask((320, 240), 200, 20, 0))
    assert angle == pytest.approx(0.0, abs=1e-3)
    assert elong == pytest.approx(200 / 20, rel=0.15)
    angle, _ = mask_principal_axis(rect_mask((320, 240), 200, 20, 30))
    assert angle == pytest.approx(math.radians(30), abs=math.radians(1))  # +v is down: right-and-down
    angle, _ = mask_principal_axis(rect_mask((320, 240), 200, 20, 90))
    assert axis_error(angle, math.pi / 2) < math.radians(1)
    _, round_elong = mask_principal_axis(disc_mask((320, 240), 50))
    assert round_elong == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize(
    "image_deg, base_deg",
    # image direction (cos a, sin a) in (u, v) -> base (-sin a, -cos a): yaw = -90 deg - a (mod 180)
    [(0, -90), (30, 60), (60, 30), (90, 0), (-30, -60), (120, -30)],
)
def test_grasp_yaw_downward_camera(down, image_deg, base_deg):
    mask = rect_mask((300, 260), 220, 30, image_deg)
    yaw = grasp_yaw(mask, (300.0, 260.0), 0.8, K, down)
    assert -math.pi / 2 <= yaw < math.pi / 2
    assert axis_error(yaw, math.radians(base_deg)) < math.radians(1.0)


def test_grasp_yaw_exact_representative(down):
    # image axis at 60 deg -> base yaw exactly +30 deg, which is inside [-pi/2, pi/2) as is
    assert grasp_yaw(rect_mask((320, 240), 220, 30, 60), (320, 240), 0.8, K, down) == pytest.approx(
        math.radians(30), abs=math.radians(1)
    )


def test_grasp_yaw_round_or_empty_is_zero(down):
    assert grasp_yaw(disc_mask((320, 240), 60), (320, 240), 0.8, K, down) == 0.0
    assert grasp_yaw(rect_mask((320, 240), 60, 58, 30), (320, 240), 0.8, K, down) == 0.0  # nearly square
    assert grasp_yaw(np.zeros(SHAPE, bool), (320, 240), 0.8, K, down) == 0.0


def test_grasp_yaw_follows_camera_yaw():
    # The same downward camera turned 90 deg about base z: every base yaw turns by 90 deg too.
    turned = RigidTransform.from_xyz_rpy([0.5, 0, 0.8], [math.pi, 0, 0])  # +u -> base +x
    yaw = grasp_yaw(rect_mask((320, 240), 220, 30, 0), (320, 240), 0.8, K, turned)
    assert axis_error(yaw, 0.0) < math.radians(1)


def test_grasp_yaw_oblique_camera_on_table_plane():
    # Camera 0.6 m up looking forward and 45 deg down; a thin bar lies on the table at yaw 40 deg.
    d = np.array([math.cos(math.pi / 4), 0.0, -math.sin(math.pi / 4)])  # optical z in base
    x = np.array([0.0, -1.0, 0.0])  # optical x (image right) in base
    y = np.cross(d, x)
    m = np.eye(4)
    m[:3, :3] = np.column_stack([x, y, d])
    m[:3, 3] = [0.0, 0.0, 0.6]
    cam = RigidTransform.from_matrix(m)
    yaw_true = math.radians(40)
    centre = np.array([0.6, 0.0, 0.0])
    along = np.array([math.cos(yaw_true), math.sin(yaw_true), 0.0]) * 0.15
    across = np.array([-math.sin(yaw_true), math.cos(yaw_true), 0.0]) * 0.012
    corners = [centre + along + across, centre + along - across, centre - along - across, centre - along + across]
    to_cam = cam.inverse()
    pix = np.array([project(to_cam.apply(c), K) for c in corners])
    img = np.zeros(SHAPE, np.uint8)
    cv2.fillPoly(img, [np.round(pix).astype(np.int32)], 1)
    mask = img.astype(bool)
    mom = cv2.moments(img, binaryImage=True)
    uv = (mom["m10"] / mom["m00"], mom["m01"] / mom["m00"])
    z = table_plane_point(uv[0], uv[1], K, cam, [0, 0, 1], 0.0)[2]
    on_plane = grasp_yaw(mask, uv, z, K, cam, plane_normal=[0, 0, 1])
    assert axis_error(on_plane, yaw_true) < math.radians(2)
    same_depth = grasp_yaw(mask, uv, z, K, cam)  # the fronto-parallel approximation is visibly off
    assert axis_error(same_depth, yaw_true) > axis_error(on_plane, yaw_true)


def test_wrap_angle():
    assert wrap_angle(math.pi) == pytest.approx(-math.pi)
    assert wrap_angle(-math.pi) == pytest.approx(-math.pi)
    assert wrap_angle(3 * math.pi) == pytest.approx(-math.pi)
    assert wrap_angle(3.5) == pytest.approx(3.5 - 2 * math.pi)
    assert wrap_angle(-3.5) == pytest.approx(-3.5 + 2 * math.pi)
    assert wrap_angle(0.25) == pytest.approx(0.25)
    assert -math.pi <= wrap_angle(-1e-17) < math.pi and abs(wrap_angle(-1e-17)) < 1e-12
    assert isinstance(wrap_angle(1.0), float)
    just_below = float(np.nextafter(-math.pi, -math.inf))  # np.mod rounds this to +pi unless guarded
    assert -math.pi <= wrap_angle(just_below) < math.pi
    arr = wrap_angle(np.array([0.0, math.pi, -3.5, 7.0]))
    np.testing.assert_allclose(arr, [0.0, -math.pi, -3.5 + 2 * math.pi, 7.0 - 2 * math.pi])
    rng = np.random.default_rng(0)
    many = wrap_angle(rng.uniform(-50, 50, 10000))
    assert np.all((many >= -math.pi) & (many < math.pi))


# --------------------------------------------------------------------------- locate
def test_locate_falls_back_to_table_plane(down):
    mask = disc_mask((420, 140), 15)
    res = locate(mask, (420.0, 140.0), None, K, down, GeometryConfig())
    assert isinstance(res, LocateResult)
    assert res.depth_source == "table_plane"
    np.testing.assert_allclose(res.xyz_base, [0.66, -0.16, 0.0], atol=1e-12)
    np.testing.assert_allclose(res.xyz_camera, [0.16, -0.16, 0.8], atol=1e-12)
    assert res.depth == pytest.approx(0.8)


@pytest.mark.parametrize("reading", [0, 65535, np.nan, np.inf], ids=["zero", "max_u16", "nan", "inf"])
def test_depth_without_a_valid_reading_on_the_mask_is_refused_unless_allowed(down, reading):
    """The table plane puts a tall object centimetres off: a failed depth reading must not hide."""
    mask = disc_mask((420, 140), 15)
    dtype = np.uint16 if reading in (0, 65535) else np.float32
    depth = np.full(SHAPE, 0.75, np.float32).astype(dtype) if dtype == np.float32 else np.full(SHAPE, 750, dtype)
    depth[mask] = reading
    with pytest.raises(GeometryError, match=r"no valid depth over the mask \(0 of .*depth_fallback"):
        locate(mask, (420.0, 140.0), depth, K, down, GeometryConfig())
    res = locate(mask, (420.0, 140.0), depth, K, down, GeometryConfig(depth_fallback="table_plane"))
    assert res.depth_source == "table_plane" and "depth_fallback: table_plane" in res.note
    np.testing.assert_allclose(res.xyz_base, [0.66, -0.16, 0.0], atol=1e-12)
    assert locate(mask, (420.0, 140.0), None, K, down, GeometryConfig()).note == ""  # no depth image: no note


def test_locate_uses_depth(down):
    mask = disc_mask((420, 140), 15)
    depth = np.zeros(SHAPE, np.uint16)
    depth[mask] = 700  # millimetres: object top 0.1 m above the table
    ys, xs = np.nonzero(mask)
    depth[ys[:5], xs[:5]] = 3000  # a few wild readings on the mask
    depth[:, :100] = 200  # something near, but off the mask
    res = locate(mask, (420.0, 140.0), depth, K, down, GeometryConfig(point_estimate="surface"))
    assert res.depth_source == "depth"
    assert res.depth == pytest.approx(0.7, abs=1e-6)
    np.testing.assert_allclose(res.xyz_camera, [0.14, -0.14, 0.7], atol=1e-6)
    np.testing.assert_allclose(res.xyz_base, [0.64, -0.14, 0.1], atol=1e-6)
    assert res.valid_pixels == int(mask.sum())
    metres = depth_to_metres(depth)  # float metres give the same answer
    again = locate(mask, (420.0, 140.0), metres, K, down, GeometryConfig(point_estimate="surface"))
    np.testing.assert_allclose(again.xyz_base, res.xyz_base, atol=1e-6)


def test_locate_depth_statistic(down):
    mask = disc_mask((320, 240), 20)
    depth = np.full(SHAPE, np.nan, np.float32)
    depth[mask] = np.linspace(0.6, 0.8, int(mask.sum()), dtype=np.float32)
    near = locate(mask, (320, 240), depth, K, down, GeometryConfig(depth_statistic="percentile_25",
                                                                   point_estimate="surface"))
    mid = locate(mask, (320, 240), depth, K, down, GeometryConfig(depth_statistic="median",
                                                                  point_estimate="surface"))
    assert near.depth == pytest.approx(0.65, abs=1e-3)
    assert mid.depth == pytest.approx(0.70, abs=1e-3)
    assert near.xyz_base[2] > mid.xyz_base[2]  # the near surface is higher above the table


def test_locate_fails_clearly():
    fwd = RigidTransform.from_xyz_rpy([0, 0, 0.5], [-math.pi / 2, 0, -math.pi / 2])
    mask = disc_mask((320, 240), 10)
    with pytest.raises(GeometryError, match="table"):
        locate(mask, (320.0, 240.0), None, K, fwd, GeometryConfig())
    with pytest.raises(ValueError):
        locate(mask, (320.0, 240.0), np.zeros((10, 10), np.uint16), K, fwd, GeometryConfig())


# --------------------------------------------------------------------------- locate: object centre
def look_at(eye, target) -> RigidTransform:
    """Optical frame (z forward, x right, y down) at ``eye`` looking at ``target``, level roll."""
    eye = np.asarray(eye, dtype=float)
    z = np.asarray(target, dtype=float) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    return RigidTransform(np.column_stack([x, np.cross(z, x), z]), eye)


def oblique_camera(target, elevation_deg=45.0, distance=0.6, azimuth_deg=20.0) -> RigidTransform:
    """A camera ``distance`` from ``target``, looking down at it from ``elevation_deg``."""
    e, a = math.radians(elevation_deg), math.radians(azimuth_deg)
    t = np.asarray(target, dtype=float)
    eye = t + distance * np.array([-math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])
    return look_at(eye, t)


def render(cam: RigidTransform, hit, table_z=0.0, shape=SHAPE):
    """(true mask, float depth in metres) of one object on the table plane z = table_z, by ray casting.

    ``hit(origin, directions)`` returns the ray parameter of the first hit (inf for a miss) for
    directions scaled so that the parameter IS the optical depth.
    """
    v, u = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    d_cam = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u)], axis=-1)
    o, d = cam.translation, d_cam @ cam.rotation.T
    t_obj = hit(o, d)
    with np.errstate(divide="ignore"):
        t_table = (table_z - o[2]) / d[..., 2]
    mask = np.isfinite(t_obj)
    depth = np.where(mask, t_obj, np.where(t_table > 0, t_table, np.nan))
    return mask, depth.astype(np.float32)


def box_hit(centre, half, yaw):
    """Slab test against a box rotated by ``yaw`` about z."""
    c, s = math.cos(yaw), math.sin(yaw)
    r = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    half = np.asarray(half, dtype=float)

    def hit(o, d):
        ol, dl = (o - np.asarray(centre)) @ r, d @ r
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (-half - ol) / dl, (half - ol) / dl
        near = np.nanmax(np.minimum(t1, t2), axis=-1)
        far = np.nanmin(np.maximum(t1, t2), axis=-1)
        return np.where((far >= near) & (near > 0), near, np.inf)
    return hit


def sphere_hit(centre, radius):
    def hit(o, d):
        oc = o - np.asarray(centre)
        a, b, c = (d * d).sum(-1), 2.0 * (d @ oc), oc @ oc - radius ** 2
        disc = b * b - 4 * a * c
        t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
        return np.where((disc >= 0) & (t > 0), t, np.inf)
    return hit


def centroid(mask):
    vs, us = np.nonzero(mask)
    return (float(us.mean()), float(vs.mean()))


CENTRE = GeometryConfig(point_estimate="object_centre")
SURFACE = GeometryConfig(point_estimate="surface")


def test_point_estimate_setting():
    from clip_vla.ros import params as P

    assert GeometryConfig().point_estimate == "object_centre"
    with pytest.raises(ConfigError, match="point_estimate"):
        GeometryConfig(point_estimate="top")
    spec = P.parameter_specs()["geometry.point_estimate"]
    assert spec.default == "object_centre" and set(spec.choices) == {"object_centre", "surface"}
    assert "expected one of" in P.validate_node_value("geometry.point_estimate", "middle")


def test_object_centre_flat_top_from_above(down):
    """A 0.1 m tall cylinder seen straight down (only its top face): the centre is 5 cm up, under the top."""
    mask = disc_mask((420, 140), 15)
    depth = np.zeros(SHAPE, np.uint16)
    depth[mask] = 700
    ys, xs = np.nonzero(mask)
    depth[ys[:5], xs[:5]] = 3000  # wild readings (2.2 m below the table) do not move it
    res = locate(mask, (420.0, 140.0), depth, K, down, CENTRE)
    assert res.depth_source == "depth" and res.valid_pixels == int(mask.sum())
    np.testing.assert_allclose(res.xyz_base, [0.64, -0.14, 0.05], atol=1.5e-3)
    np.testing.assert_allclose(down.apply(res.xyz_camera), res.xyz_base, atol=1e-9)
    assert res.depth == pytest.approx(res.xyz_camera[2]) and res.depth == pytest.approx(0.75, abs=1e-3)


@pytest.mark.parametrize("normal, height, table_z", [([0.0, 0.0, 1.0], 0.0, 0.0), ([0.0, 0.0, 2.0], 0.2, 0.1)])
@pytest.mark.parametrize("yaw", [0.0, 0.5])
def test_object_centre_of_a_cube_seen_obliquely(normal, height, table_z, yaw):
    """A 4 cm cube on the table, camera 45 degrees above it: the surface point is off by > 1 cm."""
    true = np.array([0.55, 0.05, table_z + 0.02])
    cam = oblique_camera(true)
    mask, depth = render(cam, box_hit(true, [0.02, 0.02, 0.02], yaw), table_z)
    assert mask.sum() > 500
    geo = {"table_normal": normal, "table_height": height}
    res = locate(mask, centroid(mask), depth, K, cam, GeometryConfig(point_estimate="object_centre", **geo))
    surf = locate(mask, centroid(mask), depth, K, cam, GeometryConfig(point_estimate="surface", **geo))
    assert res.depth_source == surf.depth_source == "depth"
    assert np.linalg.norm(res.xyz_base - true) < 0.005
    assert abs(res.xyz_base[2] - true[2]) < 0.001  # half the (exactly seen) top height
    assert np.linalg.norm(surf.xyz_base - true) > 0.01
    np.testing.assert_allclose(cam.apply(res.xyz_camera), res.xyz_base, atol=1e-9)
    assert res.depth == pytest.approx(float(res.xyz_camera[2]))
    assert res.valid_pixels == surf.valid_pixels == int(mask.sum())


@pytest.mark.parametrize("elevation", [35.0, 45.0, 60.0])
def test_object_centre_of_a_ball(elevation):
    true = np.array([0.5, -0.08, 0.025])
    cam = oblique_camera(true, elevation_deg=elevation, azimuth_deg=-30.0)
    mask, depth = render(cam, sphere_hit(true, 0.025))
    res = locate(mask, centroid(mask), depth, K, cam, CENTRE)
    surf = locate(mask, centroid(mask), depth, K, cam, SURFACE)
    assert np.linalg.norm(res.xyz_base - true) < 0.005
    assert np.linalg.norm(surf.xyz_base - true) > 0.01


def test_object_centre_falls_back_to_surface_for_a_flat_object():
    """A sheet of paper (1 mm) has no height to halve: the surface point is the answer."""
    true = np.array([0.55, 0.05, 0.0005])
    cam = oblique_camera(true)
    mask, depth = render(cam, box_hit(true, [0.03, 0.02, 0.0005], 0.3))
    res = locate(mask, centroid(mask), depth, K, cam, CENTRE)
    surf = locate(mask, centroid(mask), depth, K, cam, SURFACE)
    np.testing.assert_array_equal(res.xyz_base, surf.xyz_base)
    assert res.depth == surf.depth and res.depth_source == "depth"


def test_object_centre_falls_back_to_surface_with_few_points(down):
    mask = disc_mask((420, 140), 15)
    depth = np.zeros(SHAPE, np.uint16)
    ys, xs = np.nonzero(mask)
    depth[ys[:6], xs[:6]] = 700  # enough for a robust depth (min_valid=5), too few for a shape
    res = locate(mask, (420.0, 140.0), depth, K, down, CENTRE)
    surf = locate(mask, (420.0, 140.0), depth, K, down, SURFACE)
    np.testing.assert_array_equal(res.xyz_base, surf.xyz_base)
    assert res.valid_pixels == 6


def test_object_centre_ignores_invalid_depth():
    true = np.array([0.55, 0.05, 0.02])
    cam = oblique_camera(true)
    mask, depth = render(cam, box_hit(true, [0.02, 0.02, 0.02], 0.3))
    clean = locate(mask, centroid(mask), depth, K, cam, CENTRE)
    rng = np.random.default_rng(3)
    holes = mask & (rng.random(mask.shape) < 0.3)
    with_nan = depth.copy()
    with_nan[holes] = np.nan
    res = locate(mask, centroid(mask), with_nan, K, cam, CENTRE)
    assert res.valid_pixels == int(mask.sum() - holes.sum())
    assert np.linalg.norm(res.xyz_base - true) < 0.005
    assert np.linalg.norm(res.xyz_base - clean.xyz_base) < 0.002
    millimetres = np.where(np.isfinite(depth), np.round(depth * 1000.0), 0).astype(np.uint16)
    millimetres[holes] = 0  # a driver's "no return"
    res16 = locate(mask, centroid(mask), millimetres, K, cam, CENTRE)
    assert res16.valid_pixels == res.valid_pixels
    assert np.linalg.norm(res16.xyz_base - true) < 0.005


def test_object_centre_subsamples_big_masks(monkeypatch):
    import clip_vla.core.geometry as G

    true = np.array([0.55, 0.05, 0.02])
    cam = oblique_camera(true)
    mask, depth = render(cam, box_hit(true, [0.02, 0.02, 0.02], 0.3))
    full = locate(mask, centroid(mask), depth, K, cam, CENTRE)
    monkeypatch.setattr(G, "CENTRE_MAX_POINTS", 400)
    assert mask.sum() > 4 * 400
    a = locate(mask, centroid(mask), depth, K, cam, CENTRE)
    b = locate(mask, centroid(mask), depth, K, cam, CENTRE)
    np.testing.assert_array_equal(a.xyz_base, b.xyz_base)  # deterministic
    assert np.linalg.norm(a.xyz_base - true) < 0.005
    assert np.linalg.norm(a.xyz_base - full.xyz_base) < 0.003
    assert a.valid_pixels == full.valid_pixels  # all valid pixels are still counted


def test_low_pixels_drops_what_is_too_high_above_the_table_and_keeps_pixels_without_depth(down):
    from clip_vla.core.geometry import low_pixels

    mask = np.zeros(SHAPE, bool)
    mask[200:220, 100:200] = True                   # the bowl's rim: 0.78 m away -> 2 cm above the table
    mask[200:220, 300:400] = True                   # the gripper: 0.60 m away -> 20 cm above it
    depth = np.full(SHAPE, 780, np.uint16)          # millimetres
    depth[200:220, 300:400] = 600
    depth[200:205, 100:110] = 0                     # no reading: kept, the depth cannot say
    low = low_pixels(mask, depth, K, down, GeometryConfig(), max_height=0.10)
    assert low[200:220, 100:200].all() and not low[200:220, 300:400].any()
    assert not (low & ~mask).any()
    assert low_pixels(mask, depth, K, down, GeometryConfig(), max_height=0.5).sum() == mask.sum()
    raised = GeometryConfig(table_height=0.15)      # a table 15 cm up: the gripper is 5 cm above it
    assert low_pixels(mask, depth, K, down, raised, max_height=0.10)[200:220, 300:400].all()
