"""Mesh creation, every sharding rule, and multi-process start-up (one place per concern).

Import the submodules directly: `from radgan_jax.parallel import mesh, sharding, distributed`.
"""
