"""Run by the WebUI when the extension is installed or the WebUI starts: add only what is missing."""
import launch

# (import name, pip requirement); torch, gradio, numpy and Pillow come with the WebUI.
REQUIREMENTS = [
    ("safetensors", "safetensors"),
    ("cv2", "opencv-python"),
    # MP4/WEBM writing on Forge 2, which ships no AnimateDiff (and so nothing that brings ffmpeg).
    ("imageio_ffmpeg", "imageio-ffmpeg"),
    # Listed among the extension's dependencies; every WebUI we know ships it, so this installs nothing there.
    ("einops", "einops"),
]

for module, requirement in REQUIREMENTS:
    if not launch.is_installed(module):
        launch.run_pip(f"install {requirement}", f"{requirement} for I2V-Adapter")
