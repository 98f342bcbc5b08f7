"""The GAN training loop shared by every model of the zoo, and its helpers."""
