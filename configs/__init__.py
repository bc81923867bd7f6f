"""Preset configs (JSON), installed as eelbert/configs."""
