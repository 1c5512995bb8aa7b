#!/usr/bin/env bash
# N cooperating JAX processes on this machine, each with DEVICES fake CPU devices: the multi-host code path
# (jax.distributed over 127.0.0.1, gloo collectives, per-process shards) without a cluster.
#
#   launch/local_multiprocess.sh N DEVICES --config=configs/demo.py --workdir=out/mp [--config.x=y ...]
#
# Every process runs `python -m radgan_jax.main ARGS --config.distributed=True`; process 0 writes outputs.
# Logs: WORKDIR/process_<i>.log. Exits non-zero if any process fails.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 NUM_PROCESSES DEVICES_PER_PROCESS --config=... --workdir=DIR [--config.x=y ...]" >&2
  exit 2
fi
num=$1; devices=$2; shift 2
workdir=""
for a in "$@"; do [[ $a == --workdir=* ]] && workdir=${a#--workdir=}; done
[[ -n $workdir ]] || { echo "$0: --workdir=DIR is required" >&2; exit 2; }
mkdir -p "$workdir"
python=${PYTHON:-python}
port=${PORT:-$(( 20000 + RANDOM % 20000 ))}
pids=()
for ((i = 0; i < num; i++)); do
  JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=$devices" \
  JAX_COORDINATOR_ADDRESS="127.0.0.1:$port" JAX_NUM_PROCESSES="$num" JAX_PROCESS_ID="$i" \
    "$python" -m radgan_jax.main "$@" --config.distributed=True >"$workdir/process_$i.log" 2>&1 &
  pids+=($!)
done
rc=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "process $i failed; last lines of $workdir/process_$i.log:" >&2
    tail -n 20 "$workdir/process_$i.log" >&2
    rc=1
  fi
done
exit $rc
