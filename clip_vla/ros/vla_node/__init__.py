"""vla_node: the lifecycle node that turns camera frames plus a command into action goals.

``node`` wires the parts (``settings``, ``inputs``, ``commands``, ``worker``, ``outputs``,
``tf``, ``diagnostics``); ``main`` runs it as a process.
"""
from clip_vla.ros.vla_node.main import main
from clip_vla.ros.vla_node.node import VlaNode

__all__ = ["VlaNode", "main"]
