"""The paper's training recipe: what learns (model.py) and what it learns from (objective.py)."""
