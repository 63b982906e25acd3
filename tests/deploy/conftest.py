"""The deployment files (Dockerfiles, compose, Kubernetes manifests, the example receiver),
checked without a Docker engine or a ComfyUI. Settings built here see a clean environment, as
in the unit tests."""

from tests.unit.conftest import clean_env

__all__ = ["clean_env"]
