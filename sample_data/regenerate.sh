#!/usr/bin/env bash
# Regenerate every store in sample_data/ from the built-in recipes (deterministic for the seeds).
#     bash sample_data/regenerate.sh
set -euo pipefail
cd "$(dirname "$0")"
traj record quadratic-mlp --epochs 10 --every 1 --out quadratic-mlp.zarr --overwrite
traj record digits-cnn --epochs 5 --every 1 --grads --out digits-cnn.zarr --overwrite
for algorithm in omd ogd bisection; do
    traj record mirror-descent --set algorithm=$algorithm --out mirror-$algorithm.zarr --overwrite
done
# a seed null for the conjugacy test: OMD from perturbed initial conditions
traj record mirror-descent --set algorithm=omd --seed 1 --out mirror-omd-seed1.zarr --overwrite
