"""Start vla_node on a camera: colour (+ registered depth + camera_info) and commands in, goals out.

    ros2 launch clip_vla clip_vla.launch.py \
        image_topic:=/camera/camera/color/image_raw \
        depth_topic:=/camera/camera/aligned_depth_to_color/image_raw \
        camera_info_topic:=/camera/camera/color/camera_info device:=cuda

Every parameter not set here comes from ``params_file`` (default: the package's
config/clip_vla.yaml). Key your own file ``/**/clip_vla: ros__parameters:``: a file keyed
``clip_vla:`` matches only the node without a namespace, and is silently ignored once
``namespace`` is set.

With ``autostart:=false`` the node waits in 'unconfigured' for a lifecycle manager. The
node's full name includes the namespace:

    ros2 lifecycle set /clip_vla configure                 # namespace unset
    ros2 lifecycle set /robot1/clip_vla configure          # namespace:=robot1
    ros2 lifecycle set /robot1/clip_vla activate
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = [
    ("namespace", "", "namespace of the node and of its relative topics"),
    ("params_file", PathJoinSubstitution([FindPackageShare("clip_vla"), "config", "clip_vla.yaml"]),
     "parameter file, keyed '/**/clip_vla: ros__parameters:' (a plain 'clip_vla:' key is ignored "
     "once namespace is set)"),
    ("image_topic", "camera/color/image_raw", "colour image (rgb8, bgr8, rgba8, bgra8, mono8)"),
    ("depth_topic", "camera/aligned_depth_to_color/image_raw",
     "depth registered to the colour camera (16UC1 mm or 32FC1 m)"),
    ("camera_info_topic", "camera/color/camera_info", "CameraInfo of the colour camera"),
    ("command_topic", "command", "std_msgs/String commands"),
    ("device", "auto", "models.device: auto | cpu | cuda | cuda:N"),
    ("clipseg_model", "CIDAS/clipseg-rd64-refined", "models.clipseg: Hugging Face id or local directory"),
    ("clip_model", "openai/clip-vit-base-patch32", "models.clip: Hugging Face id or local directory"),
    ("mode", "on_command", "on_command | continuous"),
    ("image_reliability", "best_effort", "camera subscriptions: best_effort | reliable"),
    ("use_tf", "true", "camera -> base_frame from TF (false: static geometry.camera_to_base_*)"),
    ("autostart", "true", "configure + activate at start-up (false: wait for a lifecycle manager)"),
    ("use_sim_time", "false", "use /clock (simulation, bag replay with --clock)"),
    ("log_level", "info", "debug | info | warn | error"),
]


def generate_launch_description():
    declared = [DeclareLaunchArgument(name, default_value=default, description=doc)
                for name, default, doc in ARGUMENTS]
    node = Node(
        package="clip_vla",
        executable="vla_node",
        name="clip_vla",
        namespace=LaunchConfiguration("namespace"),
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "models.device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                "models.clipseg": ParameterValue(LaunchConfiguration("clipseg_model"), value_type=str),
                "models.clip": ParameterValue(LaunchConfiguration("clip_model"), value_type=str),
                "mode": ParameterValue(LaunchConfiguration("mode"), value_type=str),
                "image_reliability": ParameterValue(LaunchConfiguration("image_reliability"), value_type=str),
                "use_tf": ParameterValue(LaunchConfiguration("use_tf"), value_type=bool),
                "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
            },
        ],
        remappings=[
            ("image", LaunchConfiguration("image_topic")),
            ("depth", LaunchConfiguration("depth_topic")),
            ("camera_info", LaunchConfiguration("camera_info_topic")),
            ("command", LaunchConfiguration("command_topic")),
        ],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
        output="screen",
        emulate_tty=True,
    )
    return LaunchDescription(declared + [node])
