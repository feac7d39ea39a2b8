"""swap_engine: the face-swap library (landmarks, alignment, face sets, autoencoder, training, conversion, video)."""
