"""vla_node: the lifecycle node that turns camera frames plus a command into action goals."""
from clip_vla.ros.vla_node.node import *  # noqa: F401,F403
from clip_vla.ros.vla_node.node import VlaNode, main  # noqa: F401
