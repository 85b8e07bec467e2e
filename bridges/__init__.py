"""PyTorch side of jaxfactor: activation streams, latent adapters, rendering, FID features."""
