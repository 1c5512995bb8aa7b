#!/usr/bin/env bash
# Multi-node GPU training under SLURM with the JAX_* variables set explicitly (one process per node, all its
# GPUs local to that process). launch/slurm.sbatch instead leaves detection to jax (one task per GPU); use this
# one where that detection fails (containers, unusual SLURM setups) or you want one process per node.
#
#   sbatch --nodes=4 launch/slurm_gpu.sh --config=configs/ctmr_512.py:16 --workdir=/shared/runs/ctmr16 \
#          --config.data.path=/shared/data/ctmr_16
#
# Every task runs the same command, `python -m radgan_jax.main ARGS --config.distributed=True`;
# radgan_jax/parallel/distributed.py reads JAX_NUM_PROCESSES / JAX_PROCESS_ID (from SLURM_NTASKS /
# SLURM_PROCID) and jax reads JAX_COORDINATOR_ADDRESS (first node of the allocation, port $JAX_PORT [29500+]).
# Needs the repo on a shared filesystem with its .venv (`pip install -r requirements.txt "jax[cuda12]==0.10.2"`;
# PYTHON overrides the interpreter) and a --workdir every node sees. Resume: resubmit the same command (it
# continues from the latest checkpoint in the workdir). SLURM sends SIGTERM at the time limit or on scancel
# (--signal below sends it 300 s early): every process saves a checkpoint at the end of its step and exits.
#
#SBATCH --job-name=radgan_jax
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --exclusive
#SBATCH --signal=TERM@300
#SBATCH --output=slurm-%j.out
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: sbatch [--nodes=N] $0 --config=... --workdir=DIR [--config.x=y ...]" >&2
  exit 2
fi
if [[ -z ${SLURM_JOB_ID:-} ]]; then
  echo "$0: not inside a SLURM allocation; submit it with sbatch" >&2
  exit 2
fi
cd "${SLURM_SUBMIT_DIR:-.}"
python=${PYTHON:-.venv/bin/python}
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
# a port derived from the job id, so two jobs sharing a first node do not collide
port=${JAX_PORT:-$(( 29500 + SLURM_JOB_ID % 1000 ))}
export JAX_COORDINATOR_ADDRESS="$head_node:$port"
echo "radgan_jax: $SLURM_NTASKS processes on $SLURM_JOB_NUM_NODES nodes, coordinator $JAX_COORDINATOR_ADDRESS" >&2

# Single quotes: SLURM_PROCID differs per task, so it must expand inside each task, not here.
# JAX_LOCAL_DEVICE_IDS = every GPU of the node: left unset, jax's SLURM detection would give each process only
# GPU number SLURM_LOCALID (its one-task-per-GPU layout), i.e. 1 of 8 here. `exec` lets the SIGTERM that
# SLURM sends reach python itself.
srun --kill-on-bad-exit=1 bash -c '
  export JAX_NUM_PROCESSES=$SLURM_NTASKS JAX_PROCESS_ID=$SLURM_PROCID
  export JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $(( ${SLURM_GPUS_ON_NODE:-8} - 1 )))
  exec "$0" -m radgan_jax.main "$@"' "$python" "$@" --config.distributed=True
