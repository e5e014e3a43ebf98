"""Replay a recorded bag into vla_node and record what it answers.

    ros2 launch clip_vla replay.launch.py bag:=/data/tabletop_run1 output:=/data/tabletop_run1_vla

``ros2 bag play`` publishes the recorded camera topics (remapped into the node by the *_topic
arguments) and any recorded commands; ``ros2 bag record`` writes the node's goal, goal_pose,
status, markers and /diagnostics to ``output``. Staleness is judged on arrival time, so the bag's
old stamps are fine; its /tf and /tf_static are played too (use_tf:=false to use the static
extrinsics instead).
"""
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription, OpaqueFunction,
                            TimerAction)
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

OUTPUTS = ("goal", "goal_pose", "status", "markers")


def _record(context, *args, **kwargs):
    namespace = LaunchConfiguration("namespace").perform(context).strip("/")
    prefix = f"/{namespace}/clip_vla" if namespace else "/clip_vla"
    topics = [f"{prefix}/{name}" for name in OUTPUTS] + ["/diagnostics"]
    if LaunchConfiguration("record_debug_image").perform(context).lower() == "true":
        topics.append(f"{prefix}/debug_image")
    output = LaunchConfiguration("output").perform(context)
    cmd = ["ros2", "bag", "record", "--output", output] + topics
    return [ExecuteProcess(cmd=cmd, output="screen")]


def generate_launch_description():
    share = FindPackageShare("clip_vla")
    declared = [
        DeclareLaunchArgument("bag", description="bag directory (or file) to play"),
        DeclareLaunchArgument("output", default_value="clip_vla_replay", description="bag to record the outputs to"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
        DeclareLaunchArgument("start_delay", default_value="15.0",
                              description="seconds before playing: vla_node loads its models first"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "clip_vla.yaml"]),
                              description="vla_node parameter file"),
        DeclareLaunchArgument("image_topic", default_value="/camera/color/image_raw", description="recorded colour"),
        DeclareLaunchArgument("depth_topic", default_value="/camera/aligned_depth_to_color/image_raw",
                              description="recorded registered depth"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/color/camera_info",
                              description="recorded camera_info"),
        DeclareLaunchArgument("command_topic", default_value="/command", description="recorded (or live) commands"),
        DeclareLaunchArgument("device", default_value="auto", description="models.device"),
        DeclareLaunchArgument("mode", default_value="on_command", description="on_command | continuous"),
        DeclareLaunchArgument("use_tf", default_value="true", description="TF from the bag's /tf, /tf_static"),
        DeclareLaunchArgument("record", default_value="true", description="record the node's outputs"),
        DeclareLaunchArgument("record_debug_image", default_value="false", description="also record ~/debug_image"),
    ]
    vla = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "clip_vla.launch.py"])),
        launch_arguments={
            "namespace": LaunchConfiguration("namespace"),
            "params_file": LaunchConfiguration("params_file"),
            "image_topic": LaunchConfiguration("image_topic"),
            "depth_topic": LaunchConfiguration("depth_topic"),
            "camera_info_topic": LaunchConfiguration("camera_info_topic"),
            "command_topic": LaunchConfiguration("command_topic"),
            "device": LaunchConfiguration("device"),
            "mode": LaunchConfiguration("mode"),
            "use_tf": LaunchConfiguration("use_tf"),
            # A replayed bag may come from a reliable or a best-effort driver: best effort hears both.
            "image_reliability": "best_effort",
        }.items(),
    )
    play = ExecuteProcess(
        cmd=["ros2", "bag", "play", LaunchConfiguration("bag"), "--rate", LaunchConfiguration("rate")],
        output="screen",
    )
    record = OpaqueFunction(function=_record, condition=IfCondition(LaunchConfiguration("record")))
    delayed_play = TimerAction(period=LaunchConfiguration("start_delay"), actions=[play])
    return LaunchDescription(declared + [vla, record, delayed_play])
