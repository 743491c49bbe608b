"""Synthetic renders from 3D meshes with exact label maps."""
