"""The simulated tabletop: camera geometry, determinism, and physical skills with ground-truth goals.

Every check here compares two independent sources of truth (the renderer vs the pinhole
model, the physics vs the success predicates), so a wrong sign, a wrong axis or a
teleporting gripper fails. Skipped only when MuJoCo is missing or cannot render offscreen.
"""
from __future__ import annotations

import hashlib
import math
import os

import numpy as np
import pytest

pytestmark = pytest.mark.sim

os.environ.setdefault("MUJOCO_GL", "egl")

mujoco = pytest.importorskip("mujoco", reason="MuJoCo is not installed (pip install 'clip_vla[sim]')")

from clip_vla.sim.camera import (  # noqa: E402
    backproject,
    matrix_from_rpy,
    project,
    rpy_from_matrix,
    transform_from_xyz_rpy,
)
from clip_vla.sim.objects import COLOURS  # noqa: E402
from clip_vla.sim.scene import SceneConfig  # noqa: E402
from clip_vla.sim.tasks import sample_layout, sample_task  # noqa: E402


def _can_render() -> str:
    """Empty string if an offscreen GL context works, else why not."""
    try:
        m = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='.1'/></worldbody></mujoco>")
        r = mujoco.Renderer(m, 8, 8)
        r.update_scene(mujoco.MjData(m))
        r.render()
        r.close()
        return ""
    except Exception as exc:  # noqa: BLE001 - any GL failure means "no rendering here"
        return f"offscreen rendering failed with MUJOCO_GL={os.environ.get('MUJOCO_GL')}: {exc}"


@pytest.fixture(scope="module")
def world():
    reason = _can_render()
    if reason:
        pytest.skip(reason)
    from clip_vla.sim.world import TabletopWorld

    w = TabletopWorld(seed=0, n_distractors=3, width=640, height=480)
    yield w
    w.close()


def _seed_where(pred, skill: str, start: int = 0, **kw) -> int:
    """First seed whose sampled task (exactly as ``world.reset`` samples it) satisfies ``pred``."""
    from clip_vla.sim.tasks import DESTINATIONS

    for seed in range(start, start + 500):
        dest = kw.get("destination")
        task = sample_task(np.random.default_rng(seed), skills=(skill,), n_distractors=3, config=SceneConfig(),
                           seed=seed, destinations=(dest,) if dest else DESTINATIONS)
        if pred(task):
            return seed
    raise AssertionError("no seed found")


def _surface_distance(shape: str, half: tuple, p_local: np.ndarray) -> np.ndarray:
    """Unsigned distance of object-frame points to the primitive's surface."""
    hx, hy, hz = half
    if shape == "ball":
        return np.abs(np.linalg.norm(p_local, axis=1) - hx)
    if shape == "cup":
        r = np.linalg.norm(p_local[:, :2], axis=1)
        dr, dz = r - hx, np.abs(p_local[:, 2]) - hz
        outside = np.hypot(np.maximum(dr, 0), np.maximum(dz, 0))
        return np.abs(np.where((dr > 0) | (dz > 0), outside, np.maximum(dr, dz)))
    q = np.abs(p_local) - np.array([hx, hy, hz])
    outside = np.linalg.norm(np.maximum(q, 0), axis=1)
    inside = np.minimum(q.max(axis=1), 0)
    return np.abs(outside + inside)


# --------------------------------------------------------------------------- sampling (no physics)
def test_sampled_scene_has_confusable_distractors_and_unique_phrases():
    cfg = SceneConfig()
    for seed in range(20):
        task = sample_task(np.random.default_rng(seed), skills=("pick", "place", "push"), n_distractors=3, config=cfg)
        names = [o.name for o in task.layout.objects]
        assert len(names) == 4 and len(set(names)) == 4
        target = task.layout.objects[0]
        assert task.object == target.name and target.name in task.command
        colours = [o.colour for o in task.layout.objects[1:]]
        shapes = [o.shape for o in task.layout.objects[1:]]
        assert target.colour in colours and target.shape in shapes  # "red block" vs "red ball" and "blue block"
        assert all(o.colour in COLOURS for o in task.layout.objects)
        for i, a in enumerate(task.layout.objects):
            for b in task.layout.objects[i + 1:]:
                assert math.hypot(a.x - b.x, a.y - b.y) >= a.radius + b.radius
            for f in task.layout.fixtures:
                assert f.footprint_distance(a.x, a.y) >= a.radius
        if task.skill == "place":
            assert task.destination in ("bowl", "tray") and task.destination in task.command


def test_training_scenes_can_make_every_distractor_a_look_alike():
    from dataclasses import replace

    cfg = replace(SceneConfig(), all_look_alikes=True)
    for seed in range(20):
        task = sample_task(np.random.default_rng(seed), skills=("pick",), n_distractors=3, config=cfg)
        target, others = task.layout.objects[0], task.layout.objects[1:]
        assert len(others) == 3
        assert all(o.colour == target.colour or o.shape == target.shape for o in others), task.layout.objects


def test_sampling_is_deterministic():
    a = sample_layout(np.random.default_rng(5), 3)
    b = sample_layout(np.random.default_rng(5), 3)
    c = sample_layout(np.random.default_rng(6), 3)
    assert a == b and a != c


# --------------------------------------------------------------------------- camera geometry
def test_rpy_round_trip_and_config_convention():
    for rpy in [(0.3, -0.4, 1.2), (-2.4, 0.1, 1.57), (math.pi, 0.0, -math.pi / 2)]:
        r = matrix_from_rpy(*rpy)
        assert np.allclose(matrix_from_rpy(*rpy_from_matrix(r)), r, atol=1e-9)
    # The package default (camera above the table looking straight down) maps optical z to -z.
    assert np.allclose(matrix_from_rpy(math.pi, 0.0, -math.pi / 2) @ [0, 0, 1], [0, 0, -1])


def test_extrinsics_match_the_simulated_camera(world):
    spec = world.config.camera
    t_sim = world.camera_to_base()
    assert np.allclose(t_sim, spec.camera_to_base(), atol=1e-6)
    xyz, rpy = world.camera_xyz_rpy()
    assert np.allclose(transform_from_xyz_rpy(xyz, rpy), t_sim, atol=1e-6)
    r = t_sim[:3, :3]
    assert np.allclose(r.T @ r, np.eye(3), atol=1e-9) and np.linalg.det(r) > 0
    # Optical z looks down at the table centre; image x (right) is the robot's left (+y) from this side.
    to_target = np.asarray(spec.target) - np.asarray(spec.position)
    assert np.allclose(r[:, 2], to_target / np.linalg.norm(to_target), atol=1e-6)
    assert r[2, 1] < 0  # image y (down) points down in the world


def test_object_centres_project_into_their_masks(world):
    for seed, size in ((3, (640, 480)), (4, (640, 480)), (3, (320, 240))):
        world.reset(seed=seed, skill="pick")
        obs = world.observe(*size)
        assert obs.rgb.shape == (size[1], size[0], 3) and obs.depth.shape == size[::-1]
        k = obs.intrinsics
        assert k.cx == pytest.approx((size[0] - 1) / 2) and k.fx == pytest.approx(k.fy)
        for name in world.object_names:
            xyz, _ = world.object_pose(name)
            u, v, z = project(xyz[None], k, obs.camera_to_base)[0]
            mask = obs.mask_of(name)
            assert mask.any(), f"{name} not visible (seed {seed})"
            ui, vi = int(round(u)), int(round(v))
            assert mask[vi - 1:vi + 2, ui - 1:ui + 2].any(), \
                f"{name}: centre projects to ({u:.1f}, {v:.1f}) outside its mask"
            vs, us = np.nonzero(mask)
            assert abs(us.mean() - u) < 0.35 * (us.max() - us.min() + 1)
            assert z > 0


def test_depth_back_projects_onto_object_surfaces_and_the_table(world):
    task = world.reset(seed=3, skill="pick")
    obs = world.observe()
    import cv2

    rng = np.random.default_rng(0)
    for spec in task.layout.objects:
        mask = cv2.erode(obs.mask_of(spec.name).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        vs, us = np.nonzero(mask)
        assert len(us) > 20, spec.name
        pick = rng.choice(len(us), size=min(60, len(us)), replace=False)
        pts = np.array([backproject(us[i], vs[i], obs.depth[vs[i], us[i]], obs.intrinsics, obs.camera_to_base)
                        for i in pick])
        b = world._body[spec.name]
        local = (pts - world.data.xpos[b]) @ world.data.xmat[b].reshape(3, 3)
        dist = _surface_distance(spec.shape, spec.half_extents, local)
        assert dist.max() < 0.003, f"{spec.name}: back-projected points {dist.max() * 1000:.1f} mm off the surface"
    # The table top (z = 0) far from the image centre: depth is z-depth, not the ray length
    # (which would be ~20% longer in the corners). Only the top face's pixels (x < front edge).
    _, _, geoms = world._camera.render(world.data, rgb=False, depth=False, segmentation=True)
    top = geoms == mujoco.mj_name2id(world.model, mujoco.mjtObj.mjOBJ_GEOM, "table_top")
    top = cv2.erode(top.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    vs, us = np.nonzero(top)
    pts = np.array([backproject(u, v, obs.depth[v, u], obs.intrinsics, obs.camera_to_base) for u, v in zip(us, vs)])
    on_top = pts[:, 0] < world.config.table_x[1] - 0.01
    ray = np.hypot(np.hypot(us - obs.intrinsics.cx, vs - obs.intrinsics.cy) / obs.intrinsics.fx, 1.0)
    far = on_top & (ray > 1.15)
    assert far.sum() > 1000
    assert np.abs(pts[far, 2]).max() < 0.002


def test_every_object_has_a_mask_and_labels_are_consistent(world):
    for seed in (0, 1, 2):
        task = world.reset(seed=seed)
        obs = world.observe()
        for name in list(world.object_names) + ["bowl", "tray", "table"]:
            m = obs.mask_of(name)
            assert m.dtype == bool and m.any(), name
            assert np.array_equal(m, world.ground_truth_mask(name))
        areas = [obs.mask_of(n).sum() for n in world.object_names]
        assert min(areas) > 150, areas  # objects are not tiny at 640x480
        assert set(np.unique(obs.segmentation)) <= set(obs.labels) | {0}
        assert task.object in world.object_names


def test_camera_stream_without_segmentation_is_the_same_picture(world):
    """sim_node renders labels only for the oracle; the colour and depth must not change."""
    world.reset(seed=3)
    full, plain = world.observe(), world.observe(segmentation=False)
    assert plain.segmentation is None
    assert np.array_equal(full.rgb, plain.rgb) and np.array_equal(full.depth, plain.depth)
    with pytest.raises(ValueError, match="without segmentation"):
        plain.mask_of(world.object_names[0])
    assert world.ground_truth_mask(world.object_names[0]).any()  # still available on demand


# --------------------------------------------------------------------------- determinism
def _episode_fingerprint(w, seed):
    task = w.reset(seed=seed, skill="pick")
    rgb_hash = hashlib.sha256(w.observe().rgb.tobytes()).hexdigest()
    xyz, yaw = w.object_pose(task.object)
    w.execute("pick", xyz, yaw)
    poses = np.concatenate([w.object_pose(n)[0] for n in w.object_names])
    return task.command, rgb_hash, poses


def test_same_seed_same_scene_and_same_physics(world):
    from clip_vla.sim.world import TabletopWorld

    a = _episode_fingerprint(world, 21)
    _episode_fingerprint(world, 22)  # history must not matter
    b = _episode_fingerprint(world, 21)
    with TabletopWorld(seed=99) as fresh:
        c = _episode_fingerprint(fresh, 21)
    assert a[0] == b[0] == c[0] and a[1] == b[1] == c[1]
    assert np.array_equal(a[2], b[2]) and np.array_equal(a[2], c[2])
    d = _episode_fingerprint(world, 23)
    assert d[1] != a[1]


# --------------------------------------------------------------------------- skills
def test_pick_with_ground_truth_succeeds_and_is_physical(world):
    for seed in (_seed_where(lambda t: t.layout.objects[0].shape == "bar", "pick"),
                 _seed_where(lambda t: t.layout.objects[0].shape == "cup", "pick")):
        task = world.reset(seed=seed, skill="pick")
        xyz, yaw = world.object_pose(task.object)
        res = world.execute("pick", xyz, yaw)
        assert res.success, res
        assert world.check_success(task)
        z = world.object_pose(task.object)[0][2]
        assert z - xyz[2] > 0.1
        assert world.held(task.object)
        half = task.layout.object(task.object).half_extents
        # Jaws closed across the major axis: the opening is the object's width, not its length.
        assert world.gripper.opening == pytest.approx(2 * half[1], abs=0.006)
        # Physical, not attached: open the hand and the object falls back to the table.
        world.gripper.open()
        world.advance(0.8)
        assert world.object_pose(task.object)[0][2] < xyz[2] + 0.01
        assert not world.check_success(task)


def test_pick_next_to_the_object_fails(world):
    task = world.reset(seed=5, skill="pick")
    xyz, yaw = world.object_pose(task.object)
    away = xyz + np.array([-math.sin(yaw), math.cos(yaw), 0.0]) * 0.15
    res = world.execute("pick", away, yaw)
    assert not world.check_success(task)
    assert world.object_pose(task.object)[0][2] < xyz[2] + 0.01
    assert res.details["object"] != task.object or not res.success


@pytest.mark.parametrize("destination", ["bowl", "tray"])
def test_place_after_pick_lands_in_the_destination(world, destination):
    seed = _seed_where(lambda t: True, "place", start=40, destination=destination)
    task = world.reset(seed=seed, skill="place", destination=destination)
    assert task.destination == destination
    xyz, yaw = world.object_pose(task.object)
    assert not world.execute("place", task.destination_xyz).success  # nothing held yet
    assert world.execute("pick", xyz, yaw).success
    dest, dyaw = world.object_pose(task.destination)
    res = world.execute("place", dest, dyaw)
    assert res.success, res
    assert world.check_success(task)
    final = world.object_pose(task.object)[0]
    assert task.layout.fixture(destination).contains(final[0], final[1])
    assert not world.held(task.object)


def test_push_moves_the_object_along_theta(world):
    task = world.reset(seed=2, skill="push")
    xyz, _ = world.object_pose(task.object)
    others = {n: world.object_pose(n)[0] for n in world.object_names if n != task.object}
    res = world.execute("push", xyz, task.theta)
    assert res.success, res
    d = world.object_pose(task.object)[0] - xyz
    direction = np.array([math.cos(task.theta), math.sin(task.theta)])
    along = float(d[:2] @ direction)
    across = abs(float(d[:2] @ np.array([-direction[1], direction[0]])))
    assert along > 0.05 and across < along
    assert world.check_success(task)
    assert all(np.linalg.norm(world.object_pose(n)[0] - p) < 0.01 for n, p in others.items())


def test_point_at_and_unsupported_skills(world):
    task = world.reset(seed=8, skill="point_at")
    xyz, _ = world.object_pose(task.object)
    assert world.execute("point_at", xyz).success
    assert world.check_success(task)
    tcp = world.gripper_pose()[0]
    assert tcp[2] - xyz[2] == pytest.approx(0.05, abs=0.01)
    assert np.linalg.norm(world.object_pose(task.object)[0] - xyz) < 0.005  # hovering, not touching
    res = world.execute("open", xyz)
    assert not res.success and "unsupported" in res.reason
    assert not world.execute("fly", xyz).success
    assert world.execute("none").success


# --------------------------------------------------------------------------- failure labels
def _bare_table_spot(world, centre, distance: float, exclude=None) -> np.ndarray:
    """A point ``distance`` from ``centre`` on the bare table (no object or fixture under it), in the object region."""
    cfg = world.config
    for k in range(24):
        a = 2 * math.pi * k / 24
        p = np.array([centre[0] + distance * math.cos(a), centre[1] + distance * math.sin(a)])
        inside = cfg.object_x[0] <= p[0] <= cfg.object_x[1] and cfg.object_y[0] <= p[1] <= cfg.object_y[1]
        if inside and world.goal_on(p, exclude=exclude) is None:
            return p
    raise AssertionError(f"no bare table {distance} m from {centre}")


def _step(res, skill: str):
    """The step record `clip-vla sim` makes of a simulator result (as sim_node publishes it)."""
    from clip_vla.tools.sim_eval import StepRecord

    return StepRecord(command="", expected_skill=skill, status="accepted", executed=True, success=res.success,
                      failure=res.failure, reason=res.reason)


def test_goal_on_picks_objects_then_fixtures_then_the_bare_table():
    from clip_vla.sim.scene import FixtureSpec
    from clip_vla.sim.tasks import GOAL_ON_TOLERANCE, entity_at

    bowl = FixtureSpec("bowl", 0.6, 0.2, 0.0)
    objects = [("red cup", 0.5, 0.0, 0.025), ("red ball", 0.5, 0.085, 0.025)]
    assert entity_at((0.5, 0.03), objects, [bowl]) == "red cup"
    assert entity_at((0.5, -(0.025 + GOAL_ON_TOLERANCE - 0.001)), objects, [bowl]) == "red cup"
    assert entity_at((0.5, -(0.025 + GOAL_ON_TOLERANCE + 0.001)), objects, [bowl]) is None
    assert entity_at((0.5, 0.0435), objects, [bowl]) == "red ball"  # near both: the nearer edge
    assert entity_at((0.6, 0.2), objects, [bowl]) == "bowl"
    assert entity_at((0.4, -0.2), objects, [bowl]) is None


def test_push_the_wrong_way_fails_when_the_command_named_a_direction(world):
    from clip_vla.tools.sim_eval import _failure

    task = world.reset(seed=2, skill="push", direction="left")
    assert task.command.endswith(" to the left") and task.direction == "left"
    assert task.theta == pytest.approx(math.pi / 2)  # the oracle pushes the way the command says
    xyz, _ = world.object_pose(task.object)
    res = world.execute("push", xyz, -math.pi / 2)  # to the right: the skill works, the task does not
    moved = world.object_pose(task.object)[0] - xyz
    assert moved[1] < -0.03, moved
    assert res.success  # along the goal's own theta, which is all the executor knows
    assert not world.check_success(task)
    assert res.failure == "wrong direction" and _failure(_step(res, "push")) == "wrong direction"
    task = world.reset(seed=2, skill="push", direction="left")
    ok, results = world.run_oracle(task)
    assert ok and results[-1].failure is None


def test_a_drop_beside_the_bowl_is_not_a_placement_nor_a_wrong_object(world):
    from clip_vla.tools.sim_eval import _failure

    seed = _seed_where(lambda t: True, "place", start=40, destination="bowl")
    task = world.reset(seed=seed, skill="place", destination="bowl")
    xyz, yaw = world.object_pose(task.object)
    pick = world.execute("pick", xyz, yaw)
    assert pick.success and pick.failure is None  # the first step of a place task, done
    bowl = task.layout.fixture("bowl")
    spot = _bare_table_spot(world, (bowl.x, bowl.y), bowl.radius + 0.06, exclude=task.object)
    res = world.execute("place", (spot[0], spot[1], 0.05), 0.0)
    assert res.success, res  # released at rest where the goal was: the skill itself worked
    assert not world.check_success(task)
    assert res.failure == "dropped beside destination"
    assert _failure(_step(res, "place")) == "dropped beside destination"


def test_wrong_object_only_when_the_goal_was_on_another_object(world):
    from clip_vla.tools.sim_eval import _failure

    task = world.reset(seed=5, skill="pick")
    distractor = task.distractors[0]
    dxyz, dyaw = world.object_pose(distractor)
    res = world.execute("pick", dxyz, dyaw)
    assert res.details["goal_on"] == distractor and not world.check_success(task)
    assert res.failure == "wrong object" and _failure(_step(res, "pick")) == "wrong object"

    task = world.reset(seed=5, skill="pick")
    xyz, _ = world.object_pose(task.object)
    spot = _bare_table_spot(world, xyz, 0.15)
    res = world.execute("pick", (spot[0], spot[1], xyz[2]), 0.0)
    assert res.details["goal_on"] is None and not world.check_success(task)
    assert res.failure == "goal on empty table"
    assert _failure(_step(res, "pick")) == "goal on empty table"


def _chunk(skill, xyz, theta):
    from clip_vla.core.chunks import build_chunk
    from clip_vla.core.config import ClipVlaConfig
    from clip_vla.core.tokenizer import ActionTokenizer

    config = ClipVlaConfig()
    return build_chunk(skill, 1, xyz, theta, config.motion, ActionTokenizer.from_config(config.workspace)).decoded


def test_the_gripper_follows_the_nodes_chunks_for_a_one_command_place(world):
    task = world.reset(seed=11, skill="place", destination="bowl")
    world.go_home()
    xyz, yaw = world.object_pose(task.object)
    pick = world.execute("pick", xyz, yaw, chunk=_chunk("pick", xyz, yaw))
    assert pick.success and world.step_achieved("pick", task)
    dest, dyaw = world.object_pose(task.destination)
    place = world.execute("place", dest, dyaw, chunk=_chunk("place", dest, dyaw))
    assert place.success and place.failure is None and world.check_success(task)


def test_a_compound_task_is_judged_clause_by_clause():
    from clip_vla.sim.tasks import COMPOUND, sample_compound_task

    for seed in range(3000, 3010):
        task = sample_compound_task(np.random.default_rng(seed), seed=seed)
        assert task.skill == COMPOUND and 2 <= len(task.parts) <= 3
        assert len({p.object for p in task.parts}) == len(task.parts)  # distinct objects
        assert len(task.step_skills) == len(task.step_parts) >= len(task.parts)
        assert all(p.command in task.command for p in task.parts)
        if "pick" in [p.skill for p in task.parts]:
            assert task.parts[-1].skill == "pick"  # a held object is never carried into another clause


def test_a_compound_episode_succeeds_when_every_clause_does(world):
    from clip_vla.sim.tasks import oracle_theta

    task = world.reset(seed=3001, skill="compound")
    world.go_home()
    assert not world.check_success(task)
    for skill, part in zip(task.step_skills, task.step_parts):
        xyz, th = world.object_pose(part.destination if skill == "place" else part.object)
        th = oracle_theta(part) if skill == "push" else th
        world.execute(skill, xyz, th, chunk=_chunk(skill, xyz, th))
        assert world.step_achieved(skill, part), (task.command, skill)
        if skill != "pick":
            world.go_home()
    assert world.check_success(task)
