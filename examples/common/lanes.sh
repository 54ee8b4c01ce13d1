# Shared by the bench scripts (examples/multi30k/bench.sh, examples/qg/bench.sh) and examples/mlae/demo.sh: source it,
# do not run it.

# run_lanes FUNCTION "SYSTEMS" LANES: call FUNCTION NAME for every name of SYSTEMS, LANES jobs at a time (lane k takes
# names k, k + LANES, ...); fails when any call failed, after every lane has finished.
run_lanes() {
  local fn=$1 lanes=$3 lane i p fail=0 pids=() all
  read -r -a all <<< "$2"
  for ((lane = 0; lane < lanes; lane++)); do
    ( for ((i = lane; i < ${#all[@]}; i += lanes)); do "$fn" "${all[$i]}"; done ) &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || fail=1; done
  [ $fail = 0 ] || { echo "ERROR: a training lane failed (see above)" >&2; return 1; }
}

# finish_training NAME DIR: after fairseq-train of NAME into DIR: refuse a run without checkpoint_best.pt, print its
# last validation and mark it done (a rerun then reuses it).
finish_training() {
  local name=$1 dir=$2
  [ -f "$dir/checkpoint_best.pt" ] || { echo "ERROR: $name wrote no checkpoint_best.pt (see $dir/train.log)" >&2; return 1; }
  grep "valid on" "$dir/train.log" | tail -n 1
  touch "$dir/.done"
}

# begin_training NAME DIR MINUTES: before fairseq-train of NAME into DIR: fails (status 1, "reusing DIR") when a
# finished run is there, else makes DIR and says what is trained. Use: begin_training "$name" "$dir" "$MINUTES" || return 0
begin_training() {
  local name=$1 dir=$2 minutes=$3
  if [ -f "$dir/.done" ]; then echo "reusing $dir"; return 1; fi
  mkdir -p "$dir"
  echo "-- training $name for $minutes minutes (log: $dir/train.log)"
}
