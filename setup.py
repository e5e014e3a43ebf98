"""ament_python build for clip_vla: `colcon build` on a robot, `pip install .` in a venv."""
from glob import glob

from setuptools import find_packages, setup

package_name = "clip_vla"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.sdf")),
    ],
    package_data={package_name: ["weights/*/*", "weights/*/*/*", "tools/console/static/*"]},
    include_package_data=True,
    python_requires=">=3.10",
    # torch is deliberately absent: install it first for your platform (CPU, CUDA, Jetson wheel),
    # otherwise pip would pull a multi-GB CUDA build. On a robot rclpy and the message packages
    # come from the ROS distribution, never from pip.
    install_requires=[
        "numpy>=1.21",
        "opencv-python-headless>=4.5",
        "PyYAML>=5.4",
        "transformers>=4.40",
        "tokenizers>=0.15",
        "safetensors>=0.4",
        "huggingface_hub>=0.20",
    ],
    extras_require={
        "sim": ["mujoco>=3.1"],
        "bags": ["rosbags>=0.9.20"],
        "train": ["peft>=0.10"],
        "console": ["aiohttp>=3.9"],
        "test": ["pytest>=7", "selenium>=4.10"],
    },
    zip_safe=False,  # reads its shipped models and config from the package directory
    maintainer="clip_vla maintainers",
    maintainer_email="maintainers@clip-vla.dev",
    description="Vision-language-action goals from CLIPSeg + CLIP for ROS 2 manipulators.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "vla_node = clip_vla.ros.vla_node:main",
            "sim_node = clip_vla.ros.sim_node:main",
            "console_node = clip_vla.ros.console_node:main",
            "clip-vla = clip_vla.tools.cli:main",
        ],
    },
)
