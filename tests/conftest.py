import sys
from pathlib import Path

# Tests import the engine from the checkout and the model builders beside them.
ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
