"""The only code that imports the WebUI, AnimateDiff or ControlNet."""
