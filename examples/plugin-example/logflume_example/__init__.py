"""A third-party logflume plugin package: the walkthrough of docs/plugins.md."""
