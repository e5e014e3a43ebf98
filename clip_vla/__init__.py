"""clip_vla: vision-language-action goals for ROS 2 manipulators from CLIPSeg + CLIP.

The core (this package minus ``clip_vla.ros``) imports no ROS module, so it works
in a notebook, a benchmark or a training script as well as inside the node.
"""

__version__ = "0.1.0"
