"""Where the camera is: TF at each image's stamp when tf2_ros is importable, else the static extrinsics.

``camera_to_base`` answers None for "use ``geometry.camera_to_base_*``" (the pipeline's
default), so the node works without TF; ``base_to_target`` expresses goals in
``target_frame`` when it differs from ``base_frame``. A missing transform is a refusal
(``bad_input``) naming both frames, never a silent fallback.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

from clip_vla.core.framesync import Refusal
from clip_vla.core.geometry import RigidTransform
from clip_vla.core.types import Reason
from clip_vla.ros.vla_node.settings import NodeSettings


def _load_tf2() -> Any:
    try:
        import tf2_ros  # type: ignore

        return tf2_ros
    except Exception:  # noqa: BLE001 - not installed, or built for another Python
        return None


TF2 = _load_tf2()


class TfLookup:
    """A tf2 buffer and listener on ``node`` (when tf2_ros is importable and ``use_tf`` is set)."""

    def __init__(self, node: Any, settings: NodeSettings) -> None:
        self.buffer = None
        self._listener = None
        if TF2 is not None and settings.use_tf:
            self.buffer = TF2.Buffer()
            self._listener = TF2.TransformListener(self.buffer, node)

    @property
    def backend(self) -> str:
        return "tf2_ros" if self.buffer is not None else "static_extrinsics"

    def describe(self, settings: NodeSettings) -> List[Tuple[str, str]]:
        """(level, line) log lines saying where extrinsics come from, for start-up."""
        if self.buffer is not None:
            lines = [("info", f"TF: tf2_ros, looking up <image frame_id> -> '{settings.base_frame}' at each image "
                              f"stamp (timeout {settings.tf_timeout} s)")]
        elif TF2 is None:
            lines = [("info", "TF: tf2_ros not importable: static extrinsics from geometry.camera_to_base_matrix / "
                              "camera_to_base_xyz + camera_to_base_rpy")]
        else:
            lines = [("info", "TF: use_tf is false: static extrinsics from geometry.camera_to_base_*")]
        target = settings.target_frame
        if target and target != settings.base_frame and self.buffer is None:
            lines.append(("warning", f"target_frame '{target}' differs from base_frame '{settings.base_frame}' but "
                                     "TF is not available: goals are published in base_frame"))
        return lines

    def camera_to_base(self, header: Any, settings: NodeSettings,
                       warn: Any = None) -> Optional[RigidTransform]:
        """Camera frame -> base_frame at the image stamp; None = the static extrinsics.

        ``warn(message)`` is told when the image has no frame_id (static extrinsics are used).

        Raises:
            Refusal: TF is in use and has no transform at the stamp.
        """
        if self.buffer is None or not settings.use_tf:
            return None
        if not header.frame_id:
            if warn is not None:
                warn("image has no frame_id: using the static extrinsics")
            return None
        return self.lookup(settings.base_frame, header.frame_id, header.stamp, settings.tf_timeout)

    def base_to_target(self, stamp: Any, settings: NodeSettings) -> Tuple[str, Optional[RigidTransform]]:
        """(frame goals are published in, base -> that frame; None when it is the base frame).

        Raises:
            Refusal: TF has no transform from base_frame to target_frame at the stamp.
        """
        target = settings.goal_frame
        if target == settings.base_frame or self.buffer is None:
            return settings.base_frame, None
        return target, self.lookup(target, settings.base_frame, stamp, settings.tf_timeout)

    def lookup(self, target: str, source: str, stamp: Any, timeout: float) -> RigidTransform:
        """``source`` -> ``target`` at ``stamp`` (a builtin_interfaces/Time).

        Raises:
            Refusal: ``bad_input`` naming both frames, with tf2's reason.
        """
        from rclpy.duration import Duration
        from rclpy.time import Time

        try:
            tf = self.buffer.lookup_transform(target, source, Time.from_msg(stamp), timeout=Duration(seconds=timeout))
        except Exception as exc:  # noqa: BLE001 - tf2 lookup/extrapolation/connectivity errors
            raise Refusal(Reason.BAD_INPUT, f"no transform '{source}' -> '{target}' at the image stamp: {exc}")
        t = tf.transform
        return RigidTransform.from_xyz_quat([t.translation.x, t.translation.y, t.translation.z],
                                            [t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w])
