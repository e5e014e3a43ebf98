"""``vla_node [--ros-args ...]``: run the node until SIGINT/SIGTERM, then exit 0 without a traceback.

The ros2/examples shape (init once, spin, ``ExternalShutdownException``, shutdown once), with
our own signal handling: rclpy's handlers cannot interrupt a model load that is still running
in ``configure``, ours can (they raise KeyboardInterrupt until the node spins), and once it
spins they just ask the loop to stop, so the worker and the node are closed in order.
"""
from __future__ import annotations

import signal
import threading
from typing import Any, List, Optional

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, MultiThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from clip_vla.ros.vla_node.diagnostics import Throttle
from clip_vla.ros.vla_node.node import VlaNode

MAX_EXECUTOR_FAILURES = 1000  # consecutive errors from spin_once before giving up (exit 1)


class _StopSignals:
    """SIGINT/SIGTERM: KeyboardInterrupt while starting (a slow load), a stop request once running."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.running = False

    def __call__(self, signum: int, frame: Any) -> None:  # noqa: ARG002 - the signal handler signature
        self.stop.set()
        if not self.running:
            raise KeyboardInterrupt

    def install(self) -> None:
        signal.signal(signal.SIGINT, self)
        signal.signal(signal.SIGTERM, self)

    @staticmethod
    def ignore() -> None:
        """A second signal while closing must not interrupt the clean-up."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _spin(node: VlaNode, executor: Executor, stop: threading.Event) -> int:
    """Spin until asked to stop; an executor error (e.g. a message rclpy cannot take) is logged, not fatal."""
    log = Throttle(node.get_logger())
    failures = 0
    while not stop.is_set() and rclpy.ok():
        try:
            executor.spin_once(timeout_sec=0.1)
            failures = 0
        except Exception as exc:  # noqa: BLE001 - ExternalShutdownException is handled by the caller
            if isinstance(exc, ExternalShutdownException):
                raise
            failures += 1
            log("spin", "error", f"executor error: {type(exc).__name__}: {exc}")
            if failures > MAX_EXECUTOR_FAILURES:
                return 1
    return 0


def main(args: Optional[List[str]] = None) -> int:
    """Entry point of the ``vla_node`` console script and ``python -m clip_vla.ros.vla_node``."""
    signals = _StopSignals()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    signals.install()
    node: Optional[VlaNode] = None
    executor = MultiThreadedExecutor(num_threads=2)  # ~/suggest waits in its own callback group
    code = 0
    try:
        node = VlaNode()
        executor.add_node(node)
        if node.autostart and not node.start():
            node.get_logger().error("autostart failed: staying up to report the error on ~/status and "
                                    "/diagnostics; fix the parameters and trigger configure again")
        signals.running = True
        code = _spin(node, executor, signals.stop)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        signals.ignore()
        if node is not None:
            node.close()
            executor.remove_node(node)
            node.destroy_node()
        executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown()
    return code
