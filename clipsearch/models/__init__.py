"""Models: the image-text model interface (model.py), open_clip's models (clip.py), the bundled model (bundled.py),
the factory and its families (factory.py), the store's model (store_model.py), and the model inside SQL
(sql_functions.py: clipTextEmbedding)."""
