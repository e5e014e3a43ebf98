"""``python -m clip_vla.ros.vla_node``: the same as the ``vla_node`` console script."""
import sys

from clip_vla.ros.vla_node.main import main

sys.exit(main())
