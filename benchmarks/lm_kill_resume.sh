#!/usr/bin/env bash
# Issue 34: `prune smollm2-135m ... --finetune-steps 10` through the one loop, killed (SIGKILL)
# as soon as its cut is made and its distillation starts, then finished with --resume.
# Logs and timings go to $E2E (default /tmp/e2e). Needs `make llm` and ../shared.
cd "$(dirname "$0")/.."
mkdir -p "${E2E:-/tmp/e2e}"
D=../shared/datasets/wikitext-2
OUT=${E2E:-/tmp/e2e}/smol
rm -rf $OUT
ARGS=(prune smollm2-135m --data text:$D/wiki.valid.tokens,$D/wiki.test.raw --target-energy 0.7 --finetune-steps 10 --seq-len 256 --eval-windows 8 --calib-windows 4 --probe-windows 1 --out $OUT)
date +%s > ${E2E:-/tmp/e2e}/t0
.venv/bin/energyprune "${ARGS[@]}" > ${E2E:-/tmp/e2e}/first.log 2>&1 &
PID=$!
while kill -0 $PID 2>/dev/null; do
  if grep -q "fine-tune · " ${E2E:-/tmp/e2e}/first.log; then kill -9 $PID; echo "killed after the cut" >> ${E2E:-/tmp/e2e}/first.log; break; fi
  sleep 1
done
wait $PID; echo "first exit: $?" >> ${E2E:-/tmp/e2e}/first.log
date +%s > ${E2E:-/tmp/e2e}/t1
.venv/bin/energyprune "${ARGS[@]}" --resume > ${E2E:-/tmp/e2e}/resume.log 2>&1
echo "resume exit: $?" >> ${E2E:-/tmp/e2e}/resume.log
date +%s > ${E2E:-/tmp/e2e}/t2
