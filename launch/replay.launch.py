"""Replay a recorded bag into vla_node and record what it answers.

    ros2 launch clip_vla replay.launch.py bag:=/data/tabletop_run1 output:=/data/tabletop_run1_vla

``ros2 bag play`` publishes the recorded camera topics (remapped into the node by the *_topic
arguments) and any recorded commands; ``ros2 bag record`` writes the node's goal, goal_pose,
status, markers and /diagnostics to ``output``. Staleness is judged on arrival time, so the bag's
old stamps are fine; its /tf and /tf_static are played too (use_tf:=false to use the static
extrinsics instead).

The replay ends by itself: ``stop_delay`` seconds after playback finishes (time for the node to
answer the last commands) the launch shuts down. If ``ros2 bag play`` or ``ros2 bag record``
fails, or the recorder stops early, the launch shuts down at once; a failure makes ``ros2
launch`` exit with status 1 and log the tool's own exit code (launch reports only 0 or 1: a
launch-level error is its one way to return non-zero, so the failing handler raises one).
"""
from typing import Callable, List, Optional

from launch import LaunchContext, LaunchDescription
from launch.actions import (DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription, OpaqueFunction,
                            RegisterEventHandler, Shutdown, TimerAction)
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit
from launch.events.process import ProcessExited
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

OUTPUTS = ("goal", "goal_pose", "status", "markers")
ExitCallback = Callable[[ProcessExited, LaunchContext], Optional[list]]  # OnProcessExit's on_exit


class BagToolFailed(RuntimeError):
    """``ros2 bag play`` or ``record`` exited non-zero; raised so that ``ros2 launch`` exits 1."""


def _stop_when_done(tool: str, on_success: Callable[[], list]) -> ExitCallback:
    """What a ``ros2 bag`` process ending means for the replay, as an ``on_exit`` callback.

    Exits while the launch is already shutting down are ours (SIGINT to every process) and
    mean nothing. Otherwise a non-zero code is a failure of the replay, and a clean exit ends
    it (``on_success``): without this the node keeps running and the launch never returns.
    """
    def on_exit(event: ProcessExited, context: LaunchContext) -> Optional[list]:
        if context.is_shutdown:
            return None
        if event.returncode != 0:
            raise BagToolFailed(f"{tool} exited with code {event.returncode}: stopping the replay")
        return on_success()

    return on_exit


def _record(context: LaunchContext, *args, **kwargs) -> List:
    """``ros2 bag record`` of the node's outputs, and what its exit means.

    An opaque function because the topic names depend on the namespace's value.
    """
    namespace = LaunchConfiguration("namespace").perform(context).strip("/")
    prefix = f"/{namespace}/clip_vla" if namespace else "/clip_vla"
    topics = [f"{prefix}/{name}" for name in OUTPUTS] + ["/diagnostics"]
    # IfCondition reads the argument as launch reads every boolean (true/false, 1/0, any case).
    if IfCondition(LaunchConfiguration("record_debug_image")).evaluate(context):
        topics.append(f"{prefix}/debug_image")
    output = LaunchConfiguration("output").perform(context)
    record = ExecuteProcess(cmd=["ros2", "bag", "record", "--output", output] + topics, output="screen")
    # The recorder never ends by itself: if it does, the replay records nothing more, so stop.
    stop = _stop_when_done("ros2 bag record", lambda: [Shutdown(reason="ros2 bag record stopped")])
    return [record, RegisterEventHandler(OnProcessExit(target_action=record, on_exit=stop))]


def generate_launch_description():
    share = FindPackageShare("clip_vla")
    declared = [
        DeclareLaunchArgument("bag", description="bag directory (or file) to play"),
        DeclareLaunchArgument("output", default_value="clip_vla_replay", description="bag to record the outputs to"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
        DeclareLaunchArgument("start_delay", default_value="15.0",
                              description="seconds before playing: vla_node loads its models first"),
        DeclareLaunchArgument("stop_delay", default_value="5.0",
                              description="seconds between the end of playback and shutdown: the last answers"),
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
        DeclareLaunchArgument("image_reliability", default_value="best_effort",
                              description="camera subscriptions: best_effort (hears reliable and best-effort "
                                          "publishers alike) | reliable"),
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
            "image_reliability": LaunchConfiguration("image_reliability"),
        }.items(),
    )
    play = ExecuteProcess(
        cmd=["ros2", "bag", "play", LaunchConfiguration("bag"), "--rate", LaunchConfiguration("rate")],
        output="screen",
    )
    finished = _stop_when_done("ros2 bag play", lambda: [TimerAction(
        period=LaunchConfiguration("stop_delay"), actions=[Shutdown(reason="playback finished")])])
    on_play_exit = RegisterEventHandler(OnProcessExit(target_action=play, on_exit=finished))
    record = OpaqueFunction(function=_record, condition=IfCondition(LaunchConfiguration("record")))
    delayed_play = TimerAction(period=LaunchConfiguration("start_delay"), actions=[play])
    return LaunchDescription(declared + [vla, record, on_play_exit, delayed_play])
