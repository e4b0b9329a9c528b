"""A small stand-in for the Kubernetes API server, for tests and the lab.

It stores objects and applies the API's generic semantics (defaults, resourceVersion,
status subresource, patches and server-side apply, selectors, watch, finalizers,
CustomResourceDefinitions with schema validation); it knows nothing about Portico.
"""

from .apiserver import FakeApiServer
from .errors import ApiError

__all__ = ["ApiError", "FakeApiServer"]
