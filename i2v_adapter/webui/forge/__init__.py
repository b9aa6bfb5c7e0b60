"""The classic Forge family (ldm_patched: Forge previous, reForge, Forge Classic) with its AnimateDiff branch and built-in ControlNet."""
