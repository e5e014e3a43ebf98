"""``vla_node [--ros-args ...]``: run the node until SIGINT/SIGTERM, then exit 0 without a traceback.

The ros2/examples shape (init once, spin, ``ExternalShutdownException``, shutdown once), with
our own signal handling: rclpy's handlers cannot interrupt a model load that is still running
in ``configure``, ours can (they raise KeyboardInterrupt until the node spins), and once it
spins they just ask the loop to stop, so the worker and the node are closed in order, and every
command received gets its answer (``stopped`` for those that never ran) before the exit.
"""
from __future__ import annotations

import re
import signal
import sys
import threading
import time
from typing import Any, Callable, List, Optional

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.exceptions import ParameterException
from rclpy.executors import Executor, ExternalShutdownException, MultiThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from clip_vla.core.config import ConfigError
from clip_vla.ros import params
from clip_vla.ros.vla_node.diagnostics import Throttle
from clip_vla.ros.vla_node.node import VlaNode

USAGE_ERROR = 2  # exit code of an invalid parameter or parameter file, as argparse's
MAX_EXECUTOR_FAILURES = 1000  # consecutive errors from spin_once before giving up (exit 1)
LATE_COMMANDS_S = 0.2  # spinning at shutdown: commands already received by DDS are answered too
ANSWERS_ACK_S = 1.0  # at most this long for the subscribers to acknowledge the last answers


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


def _spin(node: VlaNode, executor: Executor, done: Callable[[], bool]) -> int:
    """Spin until ``done()``; an executor error (e.g. a message rclpy cannot take) is logged, not fatal."""
    log = Throttle(node.get_logger())
    failures = 0
    while not done() and rclpy.ok():
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


def _close(node: VlaNode, executor: Executor) -> None:
    """Answer every command before the node goes: waiting ones, late ones, and see the answers leave.

    ``node.close`` answers what is queued; spinning ``LATE_COMMANDS_S`` more takes the commands
    that had arrived but were not yet taken (they are answered ``stopped`` at once); the reliable
    ``~/status`` writer then gets up to ``ANSWERS_ACK_S`` to have them acknowledged.
    """
    node.close()
    if not rclpy.ok():  # the context was shut down from outside: nothing can be published any more
        return
    deadline = time.monotonic() + LATE_COMMANDS_S
    try:
        _spin(node, executor, lambda: time.monotonic() >= deadline)
    except ExternalShutdownException:
        return
    if not node.wait_answers_delivered(ANSWERS_ACK_S):
        node.get_logger().warning(f"some ~/status answers were not acknowledged within {ANSWERS_ACK_S} s")


def _parameter_error(error: Exception) -> int:
    """Say what is wrong with a parameter in one line on stderr; the exit code of a usage error (2)."""
    text = " ".join(str(error).split())
    if isinstance(error, RCLError):  # rcl's messages end with "at /project/src/...c:415" locations
        text = re.sub(r",? at \S+\.c:\d+", "", text)
    print(f"vla_node: error: {text}", file=sys.stderr)
    return USAGE_ERROR


def main(args: Optional[List[str]] = None) -> int:
    """Entry point of the ``vla_node`` console script and ``python -m clip_vla.ros.vla_node``.

    Exits 2 with one line on stderr when a parameter (file) is invalid, 0 after a signal.
    """
    signals = _StopSignals()
    try:
        files = params.read_params_files(sys.argv if args is None else args)
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except (ConfigError, RCLError) as exc:
        return _parameter_error(exc)
    signals.install()
    node: Optional[VlaNode] = None
    executor = MultiThreadedExecutor(num_threads=2)  # ~/suggest waits in its own callback group
    code = 0
    try:
        try:
            node = VlaNode(params_files=files)
        except (ConfigError, ParameterException, RCLError) as exc:
            return _parameter_error(exc)
        executor.add_node(node)
        if node.autostart and not node.start():
            node.get_logger().error("autostart failed: staying up to report the error on ~/status and "
                                    "/diagnostics; fix the parameters and trigger configure again")
        signals.running = True
        code = _spin(node, executor, signals.stop.is_set)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        signals.ignore()
        if node is not None:
            _close(node, executor)
            executor.remove_node(node)
            node.destroy_node()
        executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown()
    return code
