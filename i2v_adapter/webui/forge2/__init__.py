"""Forge 2 (backend/, gradio 4): no AnimateDiff exists there, so this extension brings its own motion modules."""
