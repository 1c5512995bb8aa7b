"""One of the cooperating processes of test_factory.py's multi-host test (not a test module).

    python tests/interpret/factory_worker.py PORT NUM_PROCESSES PROCESS_ID CONFIG.json WORKDIR

Joins jax.distributed on 127.0.0.1:PORT and runs the interpret_sample job with configs/interpret/sample.py updated
by CONFIG.json; every process renders its round-robin chunks, process 0 finalises.
"""

from __future__ import annotations

import json
import sys

import jax


def main(port: str, num: str, pid: str, config_json: str, workdir: str) -> None:
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=int(num),
                               process_id=int(pid))
    from configs.interpret.sample import get_config
    from radgan_jax.jobs.interpret_sample import sample_dataset

    config = get_config()
    config.update(json.loads(open(config_json).read()))
    summary = sample_dataset(config, workdir)
    assert (summary is not None) == (jax.process_index() == 0)
    print(f"process {jax.process_index()} of {jax.process_count()} ({jax.local_device_count()} devices): ok",
          flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
