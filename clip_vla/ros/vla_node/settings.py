"""The node's own parameters as one typed, immutable object.

``NodeSettings.from_values`` reads the values ``params.declare_parameters`` returned (or a
parameter update produced) once, with their types; the node swaps the whole object on an
update, so a thread that holds one sees a consistent set without a lock.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from clip_vla.ros import params


@dataclass(frozen=True)
class NodeSettings:
    """Every parameter the node reads itself; ``values`` keeps them all for the core config."""

    values: Mapping[str, Any] = field(repr=False)
    mode: str
    max_frame_age: float
    max_rate: float
    sync_tolerance: float
    max_camera_info_age: float
    depth_registered: bool
    image_reliability: str
    command_queue_size: int
    max_command_length: int
    verify_steps: bool
    max_retries: int
    target_frame: str  # as given: "" means base_frame
    base_frame: str
    use_tf: bool
    tf_timeout: float
    max_image_pixels: int
    autostart: bool
    diagnostics_period: float
    suggest_rate: float
    suggest_timeout: float
    device: str
    clipseg: str
    clip: str

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "NodeSettings":
        """Settings of a complete name -> value table (``params.parameter_specs`` names)."""
        v = MappingProxyType(dict(values))
        return cls(
            values=v,
            mode=str(v["mode"]),
            max_frame_age=float(v["max_frame_age"]),
            max_rate=float(v["max_rate"]),
            sync_tolerance=float(v["sync_tolerance"]),
            max_camera_info_age=float(v["max_camera_info_age"]),
            depth_registered=bool(v["depth_registered"]),
            image_reliability=str(v["image_reliability"]),
            command_queue_size=int(v["command_queue_size"]),
            max_command_length=int(v["max_command_length"]),
            verify_steps=bool(v["verify_steps"]),
            max_retries=int(v["max_retries"]),
            target_frame=str(v["target_frame"]),
            base_frame=str(v["base_frame"]),
            use_tf=bool(v["use_tf"]),
            tf_timeout=float(v["tf_timeout"]),
            max_image_pixels=int(v["max_image_pixels"]),
            autostart=bool(v["autostart"]),
            diagnostics_period=float(v["diagnostics_period"]),
            suggest_rate=float(v["suggest_rate"]),
            suggest_timeout=float(v["suggest_timeout"]),
            device=str(v["models.device"]),
            clipseg=str(v["models.clipseg"]),
            clip=str(v["models.clip"]),
        )

    def updated(self, changes: Mapping[str, Any]) -> "NodeSettings":
        """These settings with some values replaced (a parameter update)."""
        return NodeSettings.from_values({**self.values, **changes})

    @property
    def continuous(self) -> bool:
        """Whether the last command is re-localised on every new frame."""
        return self.mode == "continuous"

    @property
    def goal_frame(self) -> str:
        """The frame goals and markers are published in."""
        return self.target_frame or self.base_frame

    def config(self):
        """The core ``ClipVlaConfig`` of these values.

        Raises:
            ConfigError, ValueError: a value the core configuration does not accept.
        """
        return params.config_from_values(self.values)
