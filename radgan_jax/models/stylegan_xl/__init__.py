"""radgan_jax."""
