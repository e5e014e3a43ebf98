"""Gazebo (gz sim) tabletop with an RGB-D camera, bridged into vla_node.

    ros2 launch clip_vla sim.launch.py
    ros2 topic pub --once /command std_msgs/msg/String "{data: 'pick up the red cup'}"

Starts: gz sim on config/tabletop.sdf (ros_gz_sim), the ros_gz_bridge parameter_bridge with
config/gz_bridge.yaml (camera image, depth, camera_info, /clock), a static TF base_link ->
camera_color_optical_frame equal to the default geometry.camera_to_base_* parameters, and
vla_node (clip_vla.launch.py) on the bridged topics with simulation time.

The camera topics and ``use_sim_time`` are arguments of this file, passed on to
clip_vla.launch.py: ``ros2 launch -s`` lists the included file's arguments too, so a value
fixed in the include would be listed yet silently dropped. Their defaults are the topics
config/gz_bridge.yaml bridges.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    share = FindPackageShare("clip_vla")
    declared = [
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the bridge and the node"),
        DeclareLaunchArgument("world", default_value=PathJoinSubstitution([share, "config", "tabletop.sdf"]),
                              description="SDF world with an rgbd_camera on /tabletop/camera"),
        DeclareLaunchArgument("bridge_config", default_value=PathJoinSubstitution([share, "config", "gz_bridge.yaml"]),
                              description="ros_gz_bridge YAML"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "clip_vla.yaml"]),
                              description="vla_node parameter file"),
        DeclareLaunchArgument("device", default_value="auto", description="models.device"),
        DeclareLaunchArgument("mode", default_value="on_command", description="on_command | continuous"),
        DeclareLaunchArgument("gz_args", default_value="-r -s",
                              description="gz sim arguments before the world (-r: run, -s: server only, no GUI)"),
        DeclareLaunchArgument("image_topic", default_value="camera/color/image_raw",
                              description="colour image, as bridged by bridge_config"),
        DeclareLaunchArgument("depth_topic", default_value="camera/depth/image_raw",
                              description="depth registered to the colour camera, as bridged"),
        DeclareLaunchArgument("camera_info_topic", default_value="camera/color/camera_info",
                              description="CameraInfo of the colour camera, as bridged"),
        DeclareLaunchArgument("use_sim_time", default_value="true",
                              description="every node uses /clock (bridged from gz sim)"),
    ]
    sim_time = ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)
    gz_sim = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare("ros_gz_sim"), "launch",
                                                            "gz_sim.launch.py"])),
        launch_arguments={"gz_args": [LaunchConfiguration("gz_args"), " ", LaunchConfiguration("world")]}.items(),
    )
    bridge = Node(
        package="ros_gz_bridge",
        executable="parameter_bridge",
        name="clip_vla_gz_bridge",
        namespace=LaunchConfiguration("namespace"),
        parameters=[{"config_file": LaunchConfiguration("bridge_config"), "use_sim_time": sim_time}],
        output="screen",
    )
    # The camera pose of tabletop.sdf, as the default static extrinsics of config/clip_vla.yaml.
    camera_tf = Node(
        package="tf2_ros",
        executable="static_transform_publisher",
        name="clip_vla_camera_tf",
        arguments=["--x", "0.5", "--y", "0.0", "--z", "0.8",
                   "--roll", "3.141592653589793", "--pitch", "0.0", "--yaw", "-1.5707963267948966",
                   "--frame-id", "base_link", "--child-frame-id", "camera_color_optical_frame"],
        parameters=[{"use_sim_time": sim_time}],
    )
    vla = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "clip_vla.launch.py"])),
        launch_arguments={
            "namespace": LaunchConfiguration("namespace"),
            "params_file": LaunchConfiguration("params_file"),
            "image_topic": LaunchConfiguration("image_topic"),
            "depth_topic": LaunchConfiguration("depth_topic"),
            "camera_info_topic": LaunchConfiguration("camera_info_topic"),
            "device": LaunchConfiguration("device"),
            "mode": LaunchConfiguration("mode"),
            "use_sim_time": LaunchConfiguration("use_sim_time"),
        }.items(),
    )
    return LaunchDescription(declared + [gz_sim, bridge, camera_tf, vla])
