#!/usr/bin/env bash
# Run one radgan_jax job on every worker of a Cloud TPU VM slice (multi-host). jax.distributed discovers
# the coordinator, process count and id from the TPU metadata, so each worker runs the same command.
#
#   launch/tpu_vm_pod.sh TPU_NAME ZONE --config=configs/ctmr_512.py:16 --workdir=gs://BUCKET/run1 [...]
#
# Assumes the repo is checked out at ~/radgan_jax on every worker with its .venv installed
# (`pip install -r requirements.txt "jax[tpu]==0.10.2"`). Use a gs:// workdir: every host must see the
# same checkpoint directory.
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: $0 TPU_NAME ZONE --config=... --workdir=DIR [--config.x=y ...]" >&2
  exit 2
fi
tpu=$1; zone=$2; shift 2
printf -v args '%q ' "$@"
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command \
  "cd ~/radgan_jax && .venv/bin/python -m radgan_jax.main ${args} --config.distributed=True"
