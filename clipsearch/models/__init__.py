"""Models: the image-text model interface, its families, and the model inside SQL (clipTextEmbedding)."""
