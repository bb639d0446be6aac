#!/usr/bin/env bash
# GPU check: the code paths of "Beyond one CPU" that the 2-core CPU reference machine cannot
# run. On a machine with one or more CUDA GPUs, from anywhere, in the project's Python
# environment (or with PYTHON=/path/to/python):
#
#     bash benchmarks/gpu_check.sh
#
# In a throwaway copy of the project's conf/ (your data/ and conf/local are not touched):
#   1. the smoke ingest (CPU);
#   2. the whole smoke graph with every <m>.runtime on device=cuda in bf16 (skipped on GPUs
#      without bf16), then in fp16 (autocast + gradient scaler);
#   3. with 2+ GPUs: `torchrun --nproc-per-node 2 -m d2v_pipeline.train` (DDP over NCCL),
#      then the Kedro node reusing that finished state, then the Kedro node starting its own
#      2 workers (runtime.nproc_per_node=2, torch elastic launch).
# One line per check: PASS, FAIL (with the log to read) or SKIP (with the reason). Exit code
# 1 when a check failed. Logs stay in the printed folder when something failed.

set -u -o pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python}
work=$(mktemp -d "${TMPDIR:-/tmp}/d2v-gpu-check.XXXXXX")
project=$work/project
export KEDRO_DISABLE_TELEMETRY=1 DVC_NO_ANALYTICS=1 ITERATIVE_DO_NOT_TRACK=1 MPLBACKEND=Agg
failed=0

say() { # say STATUS CHECK [DETAIL]
    printf '%-4s  %s%s\n' "$1" "$2" "${3:+ ($3)}"
    if [ "$1" = FAIL ]; then failed=1; fi
}

run() { # run LOG COMMAND...: the command in the project copy, its output into LOG
    local log=$1
    shift
    (cd "$project" && "$@") >"$log" 2>&1
}

# check_meta MODALITY METHOD PRECISION WORLD_SIZE RESUMED(yes|no): the node's metadata says
# it ran on CUDA in PRECISION with WORLD_SIZE processes, with a finite final loss, and
# (RESUMED=yes) that it reused a finished state instead of training.
check_meta() {
    "$python" - "$project/data/smoke/06_models/$1/$2/metadata.json" "$3" "$4" "$5" <<'PY'
import json
import math
import sys

path, precision, world, resumed = sys.argv[1:]
meta = json.load(open(path))
problems = []
if not str(meta.get("device")).startswith("cuda"):
    problems.append(f"device {meta.get('device')!r}")
if meta["config"]["runtime"]["precision"] != precision:
    problems.append(f"precision {meta['config']['runtime']['precision']!r}")
if meta.get("world_size") != int(world):
    problems.append(f"world size {meta.get('world_size')}")
if not isinstance(meta.get("final_loss"), float) or not math.isfinite(meta["final_loss"]):
    problems.append(f"final loss {meta.get('final_loss')}")
if resumed == "yes" and meta.get("resumed_from_step") != meta["steps"]:
    problems.append(f"resumed from step {meta.get('resumed_from_step')}, not {meta['steps']}")
if problems:
    sys.exit(f"{path}: " + "; ".join(problems))
PY
}

cuda_params() { # cuda_params PRECISION: every lane's runtime on CUDA in PRECISION
    local out="" m
    for m in image speech text; do
        out+="$m.runtime.device=cuda,$m.runtime.precision=$1,"
    done
    printf '%s' "${out%,}"
}

# --------------------------------------------------------------------------- preconditions
if ! "$python" -c 'import d2v_pipeline, torch' >/dev/null 2>&1; then
    say FAIL "environment" "$python cannot import d2v_pipeline and torch: install the project"
    exit 1
fi
gpus=$("$python" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')
if [ "$gpus" -lt 1 ]; then
    say SKIP "every check" "torch sees no CUDA device"
    rm -rf "$work"
    exit 0
fi
bf16=$("$python" -c 'import torch; print(int(torch.cuda.is_bf16_supported()))')
echo "d2v_pipeline GPU check: $gpus GPU(s), logs in $work"

if ! { mkdir -p "$project/src" "$project/data" && cp "$root/pyproject.toml" "$project/" &&
    cp -r "$root/conf" "$project/conf" && rm -rf "$project/conf/local" &&
    mkdir "$project/conf/local"; }; then
    say FAIL "project copy" "cannot copy $root/pyproject.toml and conf/ into $project"
    exit 1
fi

# --------------------------------------------------------------------------- 1. ingest
if run "$work/ingest.log" "$python" -m kedro run --env smoke --pipelines ingest; then
    say PASS "smoke ingest (CPU)"
else
    say FAIL "smoke ingest (CPU)" "see $work/ingest.log"
    echo "the other checks need the ingested data: stopping; logs in $work"
    exit 1
fi

# --------------------------------------------------------------------------- 2. smoke graph
for precision in bf16 fp16; do
    check="smoke graph on cuda, $precision"
    if [ "$precision" = bf16 ] && [ "$bf16" != 1 ]; then
        say SKIP "$check" "this GPU has no bf16 support"
        continue
    fi
    log=$work/smoke_$precision.log
    if ! run "$log" "$python" -m kedro run --env smoke --params "$(cuda_params "$precision")"; then
        say FAIL "$check" "kedro run failed, see $log"
        continue
    fi
    ok=1
    for m in image speech text; do
        check_meta "$m" data2vec "$precision" 1 no >>"$log" 2>&1 || ok=0
    done
    if [ "$ok" = 1 ]; then
        say PASS "$check"
    else
        say FAIL "$check" "unexpected metadata, see the end of $log"
    fi
done

# --------------------------------------------------------------------------- 3. several GPUs
precision=$([ "$bf16" = 1 ] && echo bf16 || echo fp16)
ddp="image.runtime.device=cuda,image.runtime.precision=$precision"
if [ "$gpus" -lt 2 ]; then
    say SKIP "torchrun on 2 GPUs" "1 GPU"
    say SKIP "kedro reuses the torchrun state" "1 GPU"
    say SKIP "kedro node on 2 GPUs (elastic launch)" "1 GPU"
else
    # a fresh state folder: step 2 already trained this run key on one GPU
    job="$ddp,image.pretrain.state_dir=data/smoke/gpu_check_torchrun"
    log=$work/torchrun.log
    if run "$log" "$python" -m torch.distributed.run --standalone --nproc-per-node 2 \
        -m d2v_pipeline.train --env smoke --modality image --method data2vec --params "$job" &&
        check_meta image data2vec "$precision" 2 no >>"$log" 2>&1; then
        say PASS "torchrun on 2 GPUs ($precision, nccl)"
        log=$work/reuse.log
        if run "$log" "$python" -m kedro run --env smoke --nodes image.pretrain_data2vec \
            --params "$job" && check_meta image data2vec "$precision" 1 yes >>"$log" 2>&1; then
            say PASS "kedro reuses the torchrun state"
        else
            say FAIL "kedro reuses the torchrun state" "see $log"
        fi
    else
        say FAIL "torchrun on 2 GPUs ($precision, nccl)" "see $log"
        say SKIP "kedro reuses the torchrun state" "no torchrun state"
    fi
    node="$ddp,image.runtime.nproc_per_node=2,image.pretrain.state_dir=data/smoke/gpu_check_elastic"
    log=$work/elastic.log
    if run "$log" "$python" -m kedro run --env smoke --nodes image.pretrain_data2vec \
        --params "$node" && check_meta image data2vec "$precision" 2 no >>"$log" 2>&1; then
        say PASS "kedro node on 2 GPUs (elastic launch, $precision)"
    else
        say FAIL "kedro node on 2 GPUs (elastic launch, $precision)" "see $log"
    fi
fi

if [ "$failed" = 1 ]; then
    echo "some checks failed; logs in $work"
    exit 1
fi
rm -rf "$work"
exit 0
