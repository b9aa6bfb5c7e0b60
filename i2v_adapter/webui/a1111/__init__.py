"""A1111 with sd-webui-animatediff and sd-webui-controlnet."""
