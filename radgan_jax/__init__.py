"""radgan_jax: RadImageGAN (StyleGAN-XL + projected D + BigDatasetGAN + nnU-Net v2) in JAX/Flax."""

__version__ = "0.1.0"
