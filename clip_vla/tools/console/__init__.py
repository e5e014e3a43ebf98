"""The operator console: a local web page to see what the robot sees and choose what it does.

``app`` is the ROS-free web side (aiohttp); ``clip_vla.ros.console_node`` connects it to vla_node.
"""
from clip_vla.tools.console.app import ConsoleApp, ConsoleError, ConsoleServer, check_bind, is_loopback

__all__ = ["ConsoleApp", "ConsoleError", "ConsoleServer", "check_bind", "is_loopback"]
