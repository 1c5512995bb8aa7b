"""One of the cooperating processes of test_pipeline_multiprocess.py (not a test module).

    python tests/data/mp_pipeline_worker.py PORT NUM_PROCESSES PROCESS_ID DATA_DIR OUT.npz

Joins jax.distributed on 127.0.0.1:PORT, reads 4 local batches of this process's shard (shard index/count from
jax.process_index()/process_count(), the pipeline's defaults), checks that `to_global` assembles a global
batch equal to the hosts' local batches concatenated (each host recomputes the other hosts' batches: the
pipeline is deterministic), and saves its local indices.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

from radgan_jax.data.pipeline import GanInputPipeline, to_global
from radgan_jax.parallel.mesh import make_mesh
from radgan_jax.parallel.sharding import host_from_global

GLOBAL_BATCH, STEPS, SEED = 16, 4, 7


def main(port: str, num: str, pid: str, data_dir: str, out: str) -> None:
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=int(num),
                               process_id=int(pid))
    assert jax.process_index() == int(pid) and jax.process_count() == int(num)
    pipe = GanInputPipeline(data_dir, 16, global_batch_size=GLOBAL_BATCH, seed=SEED, xflip=True)
    assert (pipe.shard_index, pipe.shard_count) == (jax.process_index(), jax.process_count())
    local = [next(pipe) for _ in range(STEPS)]
    mesh = make_mesh()  # every global device on 'data'
    for step, batch in enumerate(local):
        g = to_global(mesh, batch)
        assert g["image"].shape == (GLOBAL_BATCH, 16, 16, 3) and not g["image"].is_fully_addressable
        others = [GanInputPipeline(data_dir, 16, global_batch_size=GLOBAL_BATCH, seed=SEED, xflip=True,
                                   shard_index=k, shard_count=jax.process_count()) for k in range(jax.process_count())]
        for o in others:
            o.set_state({**o.get_state(), "next_batch": step})
        want = [next(o) for o in others]
        for key in ("image", "label", "index"):
            np.testing.assert_array_equal(host_from_global(g[key]), np.concatenate([w[key] for w in want]))
    np.savez(out, index=np.stack([b["index"] for b in local]), label=np.stack([b["label"] for b in local]),
             devices=np.asarray([jax.local_device_count(), jax.device_count()]))
    print(f"process {jax.process_index()} of {jax.process_count()}: ok", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
