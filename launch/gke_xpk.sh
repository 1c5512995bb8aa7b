#!/usr/bin/env bash
# Multi-host training on GKE through xpk (https://github.com/AI-Hypercomputer/xpk): one JobSet whose pods
# (every TPU VM of every slice) run the same command; jax.distributed finds the coordinator, process count and
# id from the environment GKE/xpk set on TPU pods, so nothing here is per-worker.
#
#   export PROJECT=my-project ZONE=us-east5-a CLUSTER=my-v5p-cluster \
#          BUCKET=gs://my-bucket DOCKER_IMAGE=us-docker.pkg.dev/my-project/radgan/radgan_jax:latest
#   launch/gke_xpk.sh --dry-run                 # print the xpk command, submit nothing
#   launch/gke_xpk.sh                           # submit (stem stage, configs/ctmr_512.py:16)
#   launch/gke_xpk.sh --config.train.batch_size=4096     # extra --config.* flags are passed through
#
# Environment (defaults in brackets):
#   PROJECT, ZONE, CLUSTER   GCP project, zone and an existing xpk cluster (`xpk cluster create ...`) [required]
#   BUCKET                   gs:// bucket for the workdir (every host must see the same checkpoints) [required]
#   DOCKER_IMAGE             image with the repo at /app and its deps: `pip install -r requirements.txt
#                            "jax[tpu]==0.10.2"` (TPU) or "jax[cuda12]==0.10.2" (GPU) [required]
#   CONFIG                   [configs/ctmr_512.py:16]
#   RUN                      run name: workdir = $BUCKET/runs/$RUN and the xpk workload name [radgan-ctmr16]
#   DATA_PATH                GAN dataset (data_convert output; gs:// works) [$BUCKET/data/ctmr_16]
#   TPU_TYPE, NUM_SLICES     [v5p-128, 1]; several slices = data parallelism over DCN (mesh 'data': -1)
#   MAX_RESTARTS             JobSet restarts after a failure or preemption [50]
#   GRACE_SECONDS            pod termination grace: time to write the SIGTERM checkpoint [300]
#
# Resume: the job restarts (MAX_RESTARTS) or you rerun this script with the same RUN; the same command then
# continues from the latest checkpoint in $BUCKET/runs/$RUN. On SIGTERM (preemption, `xpk workload delete`)
# every process saves a checkpoint at the end of its step and exits; GRACE_SECONDS must cover that save.
#
# GPU variant (A3 / A3 Mega / A3 Ultra nodes, one process per 8-GPU node): set DEVICE_TYPE (h100-80gb-8,
# h100-mega-80gb-8, h200-141gb-8, ...) and NUM_NODES [2]; TPU_TYPE / NUM_SLICES are then ignored and the xpk call
# becomes `--device-type=$DEVICE_TYPE --num-nodes=$NUM_NODES`. xpk sets NNODES, NODE_RANK, JAX_COORDINATOR_ADDRESS
# (pod 0's host name, without port) and JAX_COORDINATOR_PORT on GPU pods; the command is prefixed with
#   export JAX_COORDINATOR_ADDRESS=$JAX_COORDINATOR_ADDRESS:$JAX_COORDINATOR_PORT \
#          JAX_NUM_PROCESSES=$NNODES JAX_PROCESS_ID=$NODE_RANK &&
# (expanded inside the pod) so radgan_jax/parallel/distributed.py gets what it reads. The image then needs
# "jax[cuda12]==0.10.2" instead of jax[tpu].
set -euo pipefail

dry_run=0
extra=()
for a in "$@"; do
  case $a in
    --dry-run) dry_run=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) extra+=("$a") ;;
  esac
done

missing=()
for v in PROJECT ZONE CLUSTER BUCKET DOCKER_IMAGE; do
  [[ -n ${!v:-} ]] || missing+=("$v")
done
if ((${#missing[@]})); then
  echo "$0: set ${missing[*]} (see the header of this script)" >&2
  exit 2
fi
config=${CONFIG:-configs/ctmr_512.py:16}
run=${RUN:-radgan-ctmr16}
data_path=${DATA_PATH:-$BUCKET/data/ctmr_16}
tpu_type=${TPU_TYPE:-v5p-128}
num_slices=${NUM_SLICES:-1}

# The command every worker runs, quoted once so it survives xpk's bash -c.
train=(python -m radgan_jax.main "--config=$config" "--workdir=$BUCKET/runs/$run" --config.distributed=True
       "--config.data.path=$data_path" ${extra[@]+"${extra[@]}"})
printf -v train_cmd '%q ' "${train[@]}"
command="cd /app && ${train_cmd% }"

if [[ -n ${DEVICE_TYPE:-} ]]; then  # GPU nodes: map xpk's GPU env onto the JAX_* variables (see header)
  accel=(--device-type="$DEVICE_TYPE" --num-nodes="${NUM_NODES:-2}")
  gpu_env='export JAX_COORDINATOR_ADDRESS=$JAX_COORDINATOR_ADDRESS:$JAX_COORDINATOR_PORT'
  gpu_env+=' JAX_NUM_PROCESSES=$NNODES JAX_PROCESS_ID=$NODE_RANK'
  command="$gpu_env && $command"
else
  accel=(--tpu-type="$tpu_type" --num-slices="$num_slices")
fi

xpk_cmd=(xpk workload create
  --project="$PROJECT" --zone="$ZONE" --cluster="$CLUSTER"
  --workload="$run"
  --docker-image="$DOCKER_IMAGE"
  "${accel[@]}"
  --max-restarts="${MAX_RESTARTS:-50}"
  --termination-grace-period-seconds="${GRACE_SECONDS:-300}"
  --command "$command")

if ((dry_run)); then
  # one flag a line, the container command single-quoted: copy-pasteable
  n=${#xpk_cmd[@]}
  printf '%s' "${xpk_cmd[0]} ${xpk_cmd[1]} ${xpk_cmd[2]}"
  for ((i = 3; i < n - 2; i++)); do printf ' \\\n  %q' "${xpk_cmd[$i]}"; done
  printf ' \\\n  --command %s\n' "'${command//\'/\'\\\'\'}'"
  exit 0
fi
"${xpk_cmd[@]}"
echo "submitted; follow it with: xpk workload list --project=$PROJECT --zone=$ZONE --cluster=$CLUSTER" \
     "--filter-by-job=$run" >&2
