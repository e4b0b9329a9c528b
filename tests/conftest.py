"""Make the collection importable as ``ansible_collections.portico.gateway`` in tests."""

import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "collections"))
