"""The flat Hub bundle: these files are copied next to every EELBERT checkpoint (see DESIGN.md)."""
