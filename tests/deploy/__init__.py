"""Deployment artefacts: Dockerfile, Helm chart, rendered manifests, proxy examples, docs."""
