#!/bin/bash
# Tuning-half study (issue 16; run on tuning worlds only: t01-t12): action box minmax vs q0.01-0.99 for the default train->export,
# and select, on small tuning worlds. Truth: rollout 3000 sessions, seed 7 (paired).
set -e
# usage: PYTHON=.venv/bin/python WORK=runs/select-tuning bash bench/select_tuning.sh t11 t02
WORK=$(realpath -m "${WORK:-runs/select-tuning}")
W=$(realpath "${PYTHON:-$(command -v python3)}")
export OMP_NUM_THREADS=1
CLI="nice -n 10 $W -m batchrl_mtf"
for w in "$@"; do
  d=$WORK/$w; mkdir -p $d; cd $d
  read -r sessions logging seed formula beta prod < <($W -c "
from batchrl_mtf.sim.zoo import get_world; import tomli_w
zw=get_world('$w'); f=zw.doc['fusion']
open('reward.toml','w').write(tomli_w.dumps({'reward': zw.doc['reward']}))
print(zw.sessions, zw.logging, zw.log_seed, f['formula'], ','.join(map(str,f.get('beta') or [0])), ','.join(map(str,f['production'])))")
  FF="--formula $formula"; [ "$formula" = logsum ] && FF="$FF --beta $beta"
  [ -f spec.toml ] || $CLI zoo make $w --out spec.toml
  [ -f logs.parquet ] || $CLI simulate --env spec.toml --sessions $sessions --policy $logging --seed $seed --out logs.parquet
  [ -d ds ] || $CLI build-dataset logs.parquet --reward reward.toml --out ds
  [ -f true_production.json ] || $CLI rollout --env spec.toml --policy constant:$prod --sessions 3000 --seed 7 --out true_production.json >/dev/null
  for box in minmax q0.01-0.99; do
    [ -d pol_$box ] || $CLI -q train ds --out pol_$box --set action_box=$box --no-progress
    [ -f table_$box.json ] || $CLI export pol_$box --dataset ds --out table_$box.json $FF --fqe-fits 1 --fqe-steps 1000 > export_$box.txt
    [ -f true_$box.json ] || $CLI rollout --env spec.toml --policy table_$box.json --sessions 3000 --seed 7 --out true_$box.json >/dev/null
  done
  if [ ! -f sel/selection.json ]; then
    /usr/bin/time -f "%e s" -o select_time.txt $CLI -q select ds --out sel $FF --production $prod --no-progress --budget-minutes 6 > select.txt 2>&1
  fi
  [ -f true_selected.json ] || $CLI rollout --env spec.toml --policy sel/table.json --sessions 3000 --seed 7 --out true_selected.json >/dev/null
  echo "== $w done"
done
