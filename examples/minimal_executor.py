"""A minimal executor for clip_vla plans: follow each released step's chunk, report it on ``execution``.

    python examples/minimal_executor.py --ros-args -r plan:=/clip_vla/plan

vla_node publishes a command's plan on ``~/plan`` and releases one step at a time; this node
takes the step that is out (``current_step``), hands its waypoints to ``move`` (replace it with
your arm's Cartesian controller; here it only logs them) and reports the outcome. The node
then grounds the next step on a camera frame stamped after the report.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from std_msgs.msg import String

from clip_vla.core.execution import DONE, FAILED, ExecutionReport
from clip_vla.core.plan import current_step

Move = Callable[[Sequence[Dict[str, Any]]], bool]  # waypoints (x, y, z, theta, gripper) -> succeeded


class MinimalExecutor(Node):
    """Subscribes to ``plan``, runs each newly released step once, publishes its report on ``execution``."""

    def __init__(self, move: Optional[Move] = None, **node_kwargs: Any) -> None:
        """``move(waypoints)`` runs a chunk on the arm (default: log it); ``node_kwargs`` go to ``rclpy.node.Node``."""
        super().__init__("minimal_executor", **node_kwargs)
        self.move = move or self._log_waypoints
        self._done: set = set()  # (command_id, step) already run: the plan is republished as it grows
        self._holding: Optional[str] = None
        self._report = self.create_publisher(String, "execution", 10)
        self.create_subscription(String, "plan", self.on_plan, 10)

    def on_plan(self, msg: String) -> Optional[ExecutionReport]:
        """Run the step that is out, if it is new; returns the report published (None: nothing to run)."""
        plan = json.loads(msg.data)
        step = current_step(plan)
        key = (plan["command_id"], step["index"] if step else None, plan.get("attempt", 1))  # a retry is a new try
        if step is None or key in self._done:
            return None
        self._done.add(key)
        ok = self.move(step["waypoints"])
        if ok and step["skill"] == "pick":
            self._holding = step["object"]
        elif ok and step["skill"] == "place":
            self._holding = None
        report = ExecutionReport(plan["command_id"], step["index"], DONE if ok else FAILED, self._holding)
        self._report.publish(String(data=report.to_json()))
        return report

    def _log_waypoints(self, waypoints: Sequence[Dict[str, Any]]) -> bool:
        for w in waypoints:
            self.get_logger().info(f"{w['label']:>10}: x={w['x']:.3f} y={w['y']:.3f} z={w['z']:.3f} "
                                   f"theta={w['theta']:+.2f} gripper={'closed' if w['gripper'] >= 0.5 else 'open'}")
        return True


def main(args: Optional[List[str]] = None) -> int:
    rclpy.init(args=args if args is not None else sys.argv)
    node = MinimalExecutor()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
