#!/usr/bin/env bash
# The README's main command: installs what is missing, builds, generates the default model if absent,
# starts prefixd (CURVE, temporary state dir), registers a tenant and an adapter with prefixctl,
# sends five kinds of jobs, prints each output and the ledger summary, then stops the daemon cleanly.
# PREFIXD_MODEL=/path/to/model.gguf runs it on a real DeepSeek GGUF instead of the random tiny model;
# PREFIXD_BACKEND=cpu uses the fp32 CPU reference instead of Vulkan, PREFIXD_DEVICE picks a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=/usr/bin/python3
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }
t_start=$(date +%s)

step "1/8 dependencies (tools/setup.sh)"
tools/setup.sh
# Builds only what the demo runs (prefixd, prefixctl, gen_model), configured exactly as
# tools/build.sh configures build/; tools/test.sh builds the rest. PREFIXD_BUILD_DIR picks another dir.
B=${PREFIXD_BUILD_DIR:-build}
step "2/8 build prefixd, prefixctl, gen_model in $B/ (first build: several minutes on 2 cores)"
[ -f "$B/build.ninja" ] || cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$B" -j"$(nproc)" --target prefixd prefixctl gen_model
[ -x "$B/bin/prefixd" ] && [ -x "$B/bin/prefixctl" ] || die "build did not produce $B/bin/prefixd and prefixctl"
export PYTHONPATH="$ROOT/daemon/python${PYTHONPATH:+:$PYTHONPATH}" PREFIXD_BUILD_DIR="$(cd "$B" && pwd)"

MODEL=${PREFIXD_MODEL:-models/default.gguf}
step "3/8 model: $MODEL"
if [ -z "${PREFIXD_MODEL:-}" ]; then
    if [ ! -f "$MODEL" ]; then
        mkdir -p models
        echo "generating the default model (tiny DeepSeek-V3 shape, random weights, real tokenizer)"
        "$B"/bin/gen_model --config tiny-v3 --seed 1 -o "$MODEL.tmp"
        mv "$MODEL.tmp" "$MODEL"
    fi
    cat <<'EOF'
NOTE: the default model has RANDOM weights: its text is gibberish by design; the demo shows the
      machinery (adapters, embeddings, streaming, classification, billing), not model quality.
      For real output run:  PREFIXD_MODEL=/path/to/DeepSeek-V2-Lite-Chat.Q8_0.gguf tools/demo.sh
EOF
fi
[ -f "$MODEL" ] || die "model file $MODEL not found"

STATE=$(mktemp -d /tmp/prefixd-demo.XXXXXX)
DB=$STATE/prefixd.db
EP=ipc://$STATE/prefixd.sock
PID= NPID=
cleanup() {
    [ -z "$NPID" ] || kill "$NPID" 2>/dev/null || true
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" || true; fi
    rm -rf "$STATE"
}
trap cleanup EXIT
ctl() { "$B"/bin/prefixctl --db "$DB" "$@"; }

step "4/8 server key and tenant (state in $STATE)"
echo "+ prefixctl server-key generate --out $STATE/server.key"
"$B"/bin/prefixctl server-key generate --out "$STATE/server.key"
SERVER_KEY=$(awk '$1 == "public" {print $2}' "$STATE/server.key")
echo "+ prefixctl --db $DB tenant add demo --key-file $STATE/demo.key"
ctl tenant add demo --key-file "$STATE/demo.key"
ctl tenant list
AUTH=(--endpoint "$EP" --server-key "$SERVER_KEY" --client-key-file "$STATE/demo.key")

step "5/8 start prefixd"
# Read sd_notify datagrams ourselves (as systemd would): show STATUS progress, wait for READY=1.
NOTIFY=$STATE/notify.sock
$PY - "$NOTIFY" >"$STATE/notify.log" 2>&1 <<'EOF' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
while True:
    msg = s.recv(4096).decode(errors="replace")
    for line in msg.splitlines():
        print(line, flush=True)
EOF
NPID=$!
for _ in $(seq 50); do [ -S "$NOTIFY" ] && break; sleep 0.1; done
DARGS=(--model "$MODEL" --db "$DB" --endpoint "$EP" --server-key-file "$STATE/server.key"
       --backend "${PREFIXD_BACKEND:-vulkan}")
[ -z "${PREFIXD_DEVICE:-}" ] || DARGS+=(--device "$PREFIXD_DEVICE")
echo "+ prefixd ${DARGS[*]}"
NOTIFY_SOCKET=$NOTIFY "$B"/bin/prefixd "${DARGS[@]}" 2>"$STATE/prefixd.log" &
PID=$!
shown=0 ready=0
for _ in $(seq 1200); do  # up to 10 minutes (a real model takes a while to load)
    n=$(wc -l <"$STATE/notify.log")
    if [ "$n" -gt "$shown" ]; then sed -n "$((shown + 1)),${n}p" "$STATE/notify.log" | grep -E '^(STATUS|READY)' | sed 's/^/  [sd_notify] /'; shown=$n; fi
    grep -q '^READY=1' "$STATE/notify.log" && { ready=1; break; }
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.5
done
if [ "$ready" != 1 ]; then
    cat "$STATE/prefixd.log" >&2
    die "prefixd did not report READY=1"
fi
echo "prefixd is ready (pid $PID)"

step "6/8 adapter from a .npy file"
HIDDEN=$($PY -c "
import sys; from prefixd_client import Client
with Client(sys.argv[1], server_key=sys.argv[2], client_key_file=sys.argv[3], timeout=60) as c:
    print(c.health().hidden)" "$EP" "$SERVER_KEY" "$STATE/demo.key")
$PY - "$HIDDEN" "$STATE" <<'EOF'
import sys, numpy as np
hidden, state = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(42)
# 8 virtual tokens for the adapter, 4 raw embedding rows for a job (float32, [rows, hidden]).
np.save(state + "/adapter.npy", (0.02 * rng.standard_normal((8, hidden))).astype(np.float32))
np.save(state + "/prefix.npy", (0.02 * rng.standard_normal((4, hidden))).astype(np.float32))
print("wrote adapter.npy [8, %d] and prefix.npy [4, %d]" % (hidden, hidden))
EOF
echo "+ prefixctl --db $DB adapter add support-intents --tenant demo --file adapter.npy"
ctl adapter add support-intents --tenant demo --file "$STATE/adapter.npy" --description "demo adapter, 8 virtual tokens"
ctl adapter list

step "7/8 jobs"
run_job() {
    local title=$1; shift
    printf '\n-- %s\n+ prefixctl submit' "$title"
    printf ' %q' "$@"
    printf '\n'
    local t0=$SECONDS
    "$B"/bin/prefixctl submit "${AUTH[@]}" "$@"
    echo "($((SECONDS - t0))s)"
}
run_job "adapter + text" --adapter support-intents --prompt "Customer: my parcel never arrived." -n 12
run_job "raw embeddings + text" --embeds "$STATE/prefix.npy" --prompt "Translate to French: good morning" -n 12
run_job "text only" --prompt "The capital of France is" -n 12
run_job "streamed" --prompt "Once upon a time" -n 24 --stream
run_job "choices classification" --adapter support-intents \
    --prompt "Customer: I was charged twice for one order. Intent:" --choices billing,shipping,returns
printf '\n-- the same classification from Python (daemon/python/prefixd_client)\n'
$PY - "$EP" "$SERVER_KEY" "$STATE/demo.key" <<'EOF'
import sys
from prefixd_client import Client
with Client(sys.argv[1], server_key=sys.argv[2], client_key_file=sys.argv[3], timeout=300) as c:
    r = c.classify("Customer: I was charged twice for one order. Intent:",
                   choices=["billing", "shipping", "returns"], adapter="support-intents")
    print("answer: %s  probabilities: %s  usage: %s"
          % (r.text, {k: round(v, 3) for k, v in r.choices.items()}, r.usage))
EOF

step "8/8 ledger and shutdown"
echo "+ prefixctl --db $DB ledger summary"
ctl ledger summary
echo "stopping prefixd (SIGTERM, bounded drain)"
kill -TERM "$PID"
rc=0
wait "$PID" || rc=$?
PID=
grep -m1 '^STOPPING=1' "$STATE/notify.log" | sed 's/^/  [sd_notify] /' || true
kill "$NPID" 2>/dev/null || true
[ "$rc" = 0 ] || { tail -20 "$STATE/prefixd.log" >&2; die "prefixd exited with status $rc"; }
echo "prefixd stopped cleanly. Demo finished in $(( $(date +%s) - t_start ))s."
[ -n "${PREFIXD_MODEL:-}" ] || echo "Reminder: random weights. Real model: PREFIXD_MODEL=/path/to/DeepSeek-V2-Lite-Chat.Q8_0.gguf tools/demo.sh"
