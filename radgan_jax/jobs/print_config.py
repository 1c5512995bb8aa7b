"""`mode='print_config'`: prints the resolved config (after file + command-line overrides) and exits.

Useful to check what a `--config=...:ARG --config.key=value` combination really means before a long run.
"""

from __future__ import annotations

import ml_collections

from radgan_jax import jobs


@jobs.register("print_config")
def run(config: ml_collections.ConfigDict, workdir: str) -> None:
    del workdir  # prints only; writes nothing
    print(config, flush=True)  # ConfigDict prints as YAML
