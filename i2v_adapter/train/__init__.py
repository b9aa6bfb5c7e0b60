"""The trainer: ``python -m i2v_adapter train`` (one process, or many through ``accelerate launch``).

The paper's recipe on a frozen diffusers ``UNetMotionModel`` (the pipeline's loading): only ``to_q_ff`` and
``to_out_ff`` of every spatial self-attention layer learn, through the engine's own first-frame branch.
Imports torch, diffusers and accelerate lazily through its modules, so the engine stays light.
"""
