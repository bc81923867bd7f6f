"""Trained models that travel with the package (one folder each, loadable as they are), installed as
eelbert/pretrained. Each folder's README.md says how it was made; tests/test_pretrained.py checks them."""
