"""A small stand-in for the Kubernetes API server, for tests and the lab.

It stores objects and applies the API's generic semantics (defaults, resourceVersion,
status subresource, patches, selectors, watch); it knows nothing about Portico.
"""

from .apiserver import ApiError, FakeApiServer

__all__ = ["ApiError", "FakeApiServer"]
