"""embedpipe."""
