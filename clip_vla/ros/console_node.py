"""``console_node`` / ``clip-vla console``: the operator console, bridged to vla_node over ROS topics.

    vla_node ~/debug_image ──► JPEG ──┐
             ~/suggestions ───────────┤                       ┌──► browser (index.html)
             ~/status ────────────────┼─► ConsoleApp (aiohttp)┤
             ~/plan, ~/task_status ───┘                       └──◄ command text, "option N", Refresh
    command ◄── publish ◄── on_command            ~/suggest (Trigger) ◄── on_suggest

The web side (``clip_vla.tools.console``) knows nothing of ROS; this node only translates.
Parameters: ``host`` (127.0.0.1), ``port`` (8765), ``token`` (required for a non-loopback
host; then every request must carry it), ``vla_node`` (the node's name, relative to this
node's namespace: its topics are ``<vla_node>/status`` ...).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, List, Optional

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from clip_vla.ros import qos
from clip_vla.tools.console.app import DEFAULT_HOST, DEFAULT_PORT, ConsoleApp, ConsoleServer

JPEG_QUALITY = 85


def jpeg_of(msg: Image) -> bytes:
    """A debug image message as JPEG bytes.

    Raises:
        ConversionError: an encoding the node's conversions do not read.
        ValueError: the image cannot be encoded.
    """
    import cv2

    from clip_vla.ros.conversions import image_to_rgb

    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image_to_rgb(msg), cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


class ConsoleNode(Node):
    """Serves the console page while it lives (``close`` stops the server)."""

    def __init__(self, node_name: str = "console", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        host = self.declare_parameter("host", DEFAULT_HOST).value
        port = self.declare_parameter("port", DEFAULT_PORT).value
        token = self.declare_parameter("token", "").value
        vla = self.declare_parameter("vla_node", "clip_vla").value.strip("/")
        self.app = ConsoleApp(self._send_command, self.request_suggestions, token=token)
        self.server = ConsoleServer(self.app, host, port, token)  # refuses a public bind without a token

        self._command = self.create_publisher(String, "command", qos.command_qos())
        self._suggest = self.create_client(Trigger, f"{vla}/suggest")
        updates = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(Image, f"{vla}/debug_image", self._on_image, qos.output_qos(1))
        self.create_subscription(String, f"{vla}/status", lambda m: self._on_json("status", m), qos.output_qos(100))
        self.create_subscription(String, f"{vla}/suggestions", lambda m: self._on_json("suggestions", m),
                                 qos.latched_qos())
        self.create_subscription(String, f"{vla}/plan", lambda m: self._on_json("plan", m), updates)
        self.create_subscription(String, f"{vla}/task_status", lambda m: self._on_json("task_status", m), updates)
        self.url = self.server.start()
        shown = self.url + ("?token=<token>" if token else "")
        self.get_logger().info(f"operator console on {shown} (vla_node: {self.get_namespace().rstrip('/')}/{vla})")

    # ---- from the page (server threads)
    def _send_command(self, text: str) -> None:
        self._command.publish(String(data=text))

    def request_suggestions(self, wait_for_service: float = 0.0) -> None:
        """Ask vla_node for a round; the list arrives on ``~/suggestions``, a failure as an error line."""
        if not self._suggest.wait_for_service(timeout_sec=wait_for_service):
            self.app.event("error", {"message": f"{self._suggest.srv_name} is not available"})
            return
        future = self._suggest.call_async(Trigger.Request())
        future.add_done_callback(self._suggest_done)

    def _suggest_done(self, future: Any) -> None:
        response = future.result()
        if response is not None and not response.success:
            self.app.event("error", {"message": f"~/suggest: {response.message}"})

    # ---- from vla_node (executor)
    def _on_image(self, msg: Image) -> None:
        try:
            self.app.image(jpeg_of(msg))
        except Exception as exc:  # noqa: BLE001 - one bad image never stops the console
            self.get_logger().warning(f"debug image not shown: {exc}")

    def _on_json(self, kind: str, msg: String) -> None:
        try:
            data = json.loads(msg.data)
        except ValueError:
            data = {"text": msg.data}
        self.app.event(kind, data)

    def close(self) -> None:
        self.server.stop()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clip-vla console", description=__doc__.splitlines()[0])
    p.add_argument("--host", help=f"address to serve on (default {DEFAULT_HOST}; another needs --token)")
    p.add_argument("--port", type=int, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--token", help="required on every request (?token=...); needed for a non-loopback host")
    p.add_argument("--vla-node", help="vla_node's name in this namespace (default clip_vla)")
    return p


def overrides(args: argparse.Namespace) -> List[Any]:
    """The flags given, as parameter overrides (ROS parameters and flags are one set of settings)."""
    from rclpy.parameter import Parameter

    values = {"host": args.host, "port": args.port, "token": args.token, "vla_node": args.vla_node}
    return [Parameter(name, value=value) for name, value in values.items() if value is not None]


def main(argv: Optional[List[str]] = None) -> int:
    """``console_node [--ros-args ...]`` and ``clip-vla console [--host H --port P --token T]``."""
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    from clip_vla.tools.console.app import ConsoleError

    argv = sys.argv[1:] if argv is None else list(argv)
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else []
    args = build_parser().parse_args(argv[:len(argv) - len(ros_args)])
    rclpy.init(args=["console"] + ros_args)
    node: Optional[ConsoleNode] = None
    try:
        node = ConsoleNode(parameter_overrides=overrides(args))
        print(f"operator console: {node.url}  (Ctrl-C ends it)", flush=True)
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(node)
        executor.spin()
    except ConsoleError as exc:
        print(f"clip-vla console: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
