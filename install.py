"""Run by the WebUI when the extension is installed or the WebUI starts: add only what is missing."""
import launch

# (import name, pip requirement); torch, gradio, numpy and Pillow come with the WebUI.
REQUIREMENTS = [
    ("safetensors", "safetensors"),
    ("cv2", "opencv-python"),
]

for module, requirement in REQUIREMENTS:
    if not launch.is_installed(module):
        launch.run_pip(f"install {requirement}", f"{requirement} for I2V-Adapter")
