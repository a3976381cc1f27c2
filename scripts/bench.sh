#!/usr/bin/env bash
# paywarden's benchmark (docs/performance.md): release builds, side by side in one run:
#   - a bare axum JSON-RPC echo and rmcp's stateless no-op tool (the protocol's floor), and
#     FastMCP's (scripts/bench_fastmcp.py: the Python peers' stack),
#   - rmcp's tool answering a copy of revenue_summary's answer (the protocol's cost of that size),
#   - paywarden's audited reads `revenue_summary` and `get_transactions` as stateless
#     2026-07-28 calls with the demo entity (wrk, a fixed request),
#   - one SSE answer on one connection (latency of a single call, no queueing),
#   - the confirmed refund flow (preview, then confirmation) and session clients (2025-11-25)
#     (closed loops in crates/paywarden/examples/bench.rs),
#   - RSS at idle and with 1,000 open sessions,
# on SQLite and on PostgreSQL. Prints a Markdown table (also written to target/bench/results.md).
#
#   scripts/bench.sh                     everything
#   BENCH_ENGINES=sqlite scripts/bench.sh
#
# Environment: BENCH_SECONDS (per measurement, default 10), BENCH_CONNECTIONS (default 64),
# BENCH_REFUND_PAYMENTS (payments each connection of the refund row rotates over, default 8),
# BENCH_RATIO_ROUNDS and BENCH_RATIO_SECONDS (the read against the no-op in alternating rounds,
# default 3 rounds of 5 s; see ratio_rounds),
# BENCH_ENGINES (default "sqlite postgres"), BENCH_FASTMCP (0 skips the FastMCP row; it is
# installed once into $CARGO_TARGET_DIR/bench-fastmcp-venv with PYTHON >= 3.10), BENCH_PAYWARDEN (the server binary to measure;
# default this tree's release build), BENCH_PG_URL (default
# postgres://postgres@127.0.0.1:5432, trust auth; a paywarden_bench database there is dropped
# and created; query parameters are kept after the database name, e.g.
# postgres://postgres@localhost?host=/var/run/postgresql for the Unix socket),
# BENCH_PG_SOCKET_URL (default postgres://postgres@localhost?host=/var/run/postgresql: the
# same server through its Unix socket, for one more audited-read row; "" skips it),
# CARGO_TARGET_DIR (honoured). Needs wrk (Debian: apt-get install wrk; installed
# here when missing and running as root) and curl. Not part of scripts/test.sh: speed is
# measured here, never asserted by a test.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

LOAD_BEFORE="$(cut -d" " -f1-3 /proc/loadavg)"
SECONDS_EACH="${BENCH_SECONDS:-10}"
CONNS="${BENCH_CONNECTIONS:-64}"
ENGINES="${BENCH_ENGINES:-sqlite postgres}"
PG_URL="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
PG_SOCKET_URL="${BENCH_PG_SOCKET_URL-postgres://postgres@localhost?host=/var/run/postgresql}"
# pg_db URL DB: URL naming database DB, its query parameters (sslmode, host=/socket/dir) kept.
pg_db() {
    case "$1" in
        *\?*) echo "${1%%\?*}/$2?${1#*\?}" ;;
        *) echo "$1/$2" ;;
    esac
}
# fresh_pg_db URL DB: drops and creates database DB on the server at URL; prints its URL. Fails
# when psql does (chained: `set -e` does not reach into the command substitution it runs in).
fresh_pg_db() {
    psql "$(pg_db "$1" postgres)" -qc "DROP DATABASE IF EXISTS $2" >/dev/null &&
        psql "$(pg_db "$1" postgres)" -qc "CREATE DATABASE $2" >/dev/null &&
        pg_db "$1" "$2"
}
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="$TARGET/bench"
ENTITY=8ac7a4c9000000000000000000000001
TOKEN=pw_demo_sandbox_token_only_valid_against_the_paywarden_emulator

if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y wrk >/dev/null
    else
        echo "bench.sh: wrk is missing; install it (Debian/Ubuntu: sudo apt-get install wrk)" >&2
        exit 2
    fi
fi

echo "== building (release)" >&2
# Two commands: together, the example's dev-dependency features would rebuild the server.
cargo build --release -p paywarden --bin paywarden >&2
cargo build --release -p paywarden --example bench >&2
# BENCH_PAYWARDEN: another paywarden binary to measure (e.g. an earlier commit's, for a
# before/after comparison in one sitting); the baselines and the load generator are this tree's.
PAYWARDEN="${BENCH_PAYWARDEN:-$TARGET/release/paywarden}"
BENCH="$TARGET/release/examples/bench"

rm -rf "$OUT" && mkdir -p "$OUT"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() { # URL
    for _ in $(seq 1 600); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.2
    done
    echo "bench.sh: $1 did not answer" >&2
    return 1
}

rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

RESULTS=()
row() { LAST_RPS="$2"; RESULTS+=("| $1 | $2 | $3 | $4 | $5 | $6 |"); echo "$1: $2 req/s, p50 $3 ms, p99 $4 ms ($5 ok, $6 errors)" >&2; }
# Ratios of adjacent rows (see noop_row), printed under the table.
RATIOS=()

# The end of every wrk script: an answer that is not HTTP 200 with a successful result counts as
# an error, and `done` prints "RESULT req/s p50 p99 ok errors p95" (ms) for the table.
LUA_CHECK_AND_REPORT=$(cat <<'LUA'
function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"result"', 1, true)
     or string.find(body, '"isError":true', 1, true) then bad = bad + 1 end
end
function done(summary, latency, requests)
  local b = 0
  for _, t in ipairs(threads) do b = b + t:get("bad") end
  local e = summary.errors
  local failed = b + e.connect + e.read + e.write + e.status + e.timeout
  io.write(string.format("RESULT %.0f %.2f %.2f %d %d %.2f\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.requests - failed, failed,
    latency:percentile(95) / 1000))
end
LUA
)

# wrk_lua NAME URL BODY [MCP-NAME]: a wrk script POSTing BODY as a stateless call; it counts an
# answer that is not HTTP 200 with a successful result as an error.
wrk_lua() {
    local file="$OUT/$1.lua"
    local body_json
    body_json=$(printf '%s' "$3" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')
    cat >"$file" <<EOF
wrk.method = "POST"
wrk.body = $body_json
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
wrk.headers["Mcp-Method"] = "tools/call"
wrk.headers["Mcp-Name"] = "${4:-x}"
wrk.headers["X-Entity-Id"] = "$ENTITY"
wrk.headers["X-Token"] = "$TOKEN"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
$LUA_CHECK_AND_REPORT
EOF
    echo "$file"
}

# wrk_run LABEL URL BODY MCP-NAME [CONNECTIONS THREADS]
wrk_run() {
    local lua
    lua=$(wrk_lua "$(echo "$1" | tr -c 'a-zA-Z0-9_\n' _)" "$2" "$3" "$4")
    local c="${5:-$CONNS}" t="${6:-2}"
    local line
    line=$(wrk -t"$t" -c"$c" -d"${SECONDS_EACH}s" --timeout 10s -s "$lua" "$2" | grep '^RESULT')
    # shellcheck disable=SC2086
    row "$1" $(echo "$line" | cut -d' ' -f2-)
}

call_body() { # TOOL ARGS_JSON
    printf '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"%s","arguments":%s,"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"paywarden-bench","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}' "$1" "$2"
}

call_once() { # URL TOOL ARGS_JSON -> body
    curl -sf -H "X-Entity-Id: $ENTITY" -H "X-Token: $TOKEN" -H 'Content-Type: application/json' \
        -H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2026-07-28' \
        -H 'Mcp-Method: tools/call' -H "Mcp-Name: $2" "$1" -d "$(call_body "$2" "$3")"
}

# --- baselines -----------------------------------------------------------------------------------
port=$(free_port)
"$BENCH" echo --listen "127.0.0.1:$port" & PIDS+=($!)
wait_http "http://127.0.0.1:$port/"
wrk_run "axum JSON-RPC echo" "http://127.0.0.1:$port/mcp" '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}' x
kill "${PIDS[-1]}"

# noop_row LABEL [ARGS...]: rmcp's stateless no-op tool (`bench noop ARGS...`), a server of its
# own for the row. It runs first and again right after each engine's audited read, because a
# shared machine's speed drifts within one run (by a third between rows of one run, seen here);
# the read's ratio to the no-op is taken against the no-op row next to it (RATIOS, under the
# table). With `--answer FILE` it answers every call with that result instead.
noop_row() {
    local port
    port=$(free_port)
    "$BENCH" noop --listen "127.0.0.1:$port" "${@:2}" & PIDS+=($!)
    wait_http "http://127.0.0.1:$port/"
    wrk_run "$1" "http://127.0.0.1:$port/mcp" "$(call_body noop '{}')" noop
    kill "${PIDS[-1]}"
}
noop_row "rmcp stateless no-op tool"

# ratio_rounds ENGINE URL: the audited read and rmcp's no-op tool measured in turn,
# BENCH_RATIO_ROUNDS times (default 3; 0 skips), BENCH_RATIO_SECONDS each (default 5): no-op,
# read, no-op, read, ..., no-op, with one no-op server kept up (idle while the read runs) and the
# engine's paywarden idle while the no-op runs. Each read is divided by the mean of the two no-op
# runs around it, so that a drift of the machine's speed between rows (by up to a third within
# one run on the shared 2-core machine) falls on both sides of the ratio. The line under the
# table gives every round and their median; the median is what the target is read from.
RATIO_ROUNDS="${BENCH_RATIO_ROUNDS:-3}"
RATIO_SECONDS="${BENCH_RATIO_SECONDS:-5}"
ratio_rounds() {
    [ "$RATIO_ROUNDS" -gt 0 ] || return 0
    local port noop_url lua_read lua_noop before after rd line rounds=() percents=()
    port=$(free_port)
    "$BENCH" noop --listen "127.0.0.1:$port" & PIDS+=($!)
    wait_http "http://127.0.0.1:$port/"
    noop_url="http://127.0.0.1:$port/mcp"
    lua_read=$(wrk_lua "ratio_read_$1" "$2" "$(call_body revenue_summary "$REVENUE_ARGS")" revenue_summary)
    lua_noop=$(wrk_lua "ratio_noop_$1" "$noop_url" "$(call_body noop '{}')" noop)
    # rate LUA URL: the run's req/s, or "failed" when any answer was an error.
    rate() {
        line=$(wrk -t2 -c"$CONNS" -d"${RATIO_SECONDS}s" --timeout 10s -s "$1" "$2" | grep '^RESULT')
        if [ "$(echo "$line" | cut -d' ' -f6)" != 0 ]; then echo failed; else echo "$line" | cut -d' ' -f2; fi
    }
    before=$(rate "$lua_noop" "$noop_url")
    for _ in $(seq 1 "$RATIO_ROUNDS"); do
        rd=$(rate "$lua_read" "$2")
        after=$(rate "$lua_noop" "$noop_url")
        if [ "$before" = failed ] || [ "$rd" = failed ] || [ "$after" = failed ]; then
            rounds+=("an error in the round (not counted)")
        else
            percents+=("$((rd * 200 * 10 / (before + after)))")
            rounds+=("$rd / mean($before, $after) = $(printf '%d.%d' $((${percents[-1]} / 10)) $((${percents[-1]} % 10))) %")
        fi
        before="$after"
    done
    kill "${PIDS[-1]}"
    local median="none (every round failed)"
    if [ "${#percents[@]}" -gt 0 ]; then
        local sorted m
        sorted=($(printf '%s\n' "${percents[@]}" | sort -n))
        m=${sorted[$(((${#sorted[@]} - 1) / 2))]}
        median="$((m / 10)).$((m % 10)) %"
    fi
    RATIOS+=("- $1: audited read / rmcp no-op in $RATIO_ROUNDS alternating rounds of $RATIO_SECONDS s (each read against the mean of the no-op runs before and after it): $(IFS=';'; echo "${rounds[*]}" | sed 's/;/; /g'); **median $median**")
    echo "$1 ratio rounds: ${rounds[*]}; median $median" >&2
}

# FastMCP (Python) serving the same stateless no-op call: the issue's "Python peers' stack", in a
# venv of its own (fastmcp pinned; created once, BENCH_FASTMCP=0 skips the row).
if [ "${BENCH_FASTMCP:-1}" != 0 ]; then
    FASTMCP_VERSION=4.0.10
    venv="$TARGET/bench-fastmcp-venv"
    if [ "$("$venv/bin/python" -c 'import fastmcp; print(fastmcp.__version__)' 2>/dev/null)" != "$FASTMCP_VERSION" ]; then
        echo "== installing fastmcp==$FASTMCP_VERSION into $venv" >&2
        "${PYTHON:-python3}" -m venv "$venv" >&2
        "$venv/bin/python" -m pip install -q --disable-pip-version-check "fastmcp==$FASTMCP_VERSION" >&2
    fi
    port=$(free_port)
    FASTMCP_CHECK_FOR_UPDATES=off "$venv/bin/python" scripts/bench_fastmcp.py "$port" >"$OUT/fastmcp.log" 2>&1 & PIDS+=($!)
    wait_http "http://127.0.0.1:$port/mcp"
    wrk_run "FastMCP $FASTMCP_VERSION stateless no-op tool (Python)" "http://127.0.0.1:$port/mcp" "$(call_body noop '{}')" noop
    kill "${PIDS[-1]}"
fi

# socket_read_rows: the PostgreSQL audited read once more with paywarden connected through the
# server's Unix socket (BENCH_PG_SOCKET_URL) instead of TCP with sqlx's default sslmode=prefer
# (TLS whenever the server offers it, as Debian's does): what a database on the same host
# costs when connected the way docs/deploy.md advises. Its own server and database, the row and
# its ratio rounds; skipped with a note when the socket does not answer.
socket_read_rows() {
    if ! psql "$(pg_db "$PG_SOCKET_URL" postgres)" -qc 'SELECT 1' >/dev/null 2>&1; then
        echo "bench.sh: no PostgreSQL at BENCH_PG_SOCKET_URL=$PG_SOCKET_URL; its row is skipped" >&2
        return 0
    fi
    local sdir="$OUT/postgres-socket" sport surl sdb
    mkdir -p "$sdir"
    sdb=$(fresh_pg_db "$PG_SOCKET_URL" paywarden_bench_socket)
    sport=$(free_port)
    DATABASE_URL="$sdb" "$PAYWARDEN" serve \
        --config "$dir/paywarden.toml" --listen "127.0.0.1:$sport" --data-dir "$sdir/data" \
        >"$sdir/server.log" 2>&1 & PIDS+=($!)
    local sserver=${PIDS[-1]}
    wait_http "http://127.0.0.1:$sport/healthz"
    surl="http://127.0.0.1:$sport/mcp"
    call_once "$surl" revenue_summary "$REVENUE_ARGS" | grep -q '"result"'
    # The TCP server stays up, idle, as it does while the no-op rows run.
    wrk_run "postgres over its Unix socket: revenue_summary (audited read)" "$surl" \
        "$(call_body revenue_summary "$REVENUE_ARGS")" revenue_summary
    ratio_rounds "postgres over its Unix socket" "$surl"
    kill "$sserver"
    wait "$sserver" 2>/dev/null || true
}

# --- paywarden -----------------------------------------------------------------------------------
YEAR=$(date -u +%Y)
REVENUE_ARGS="{\"start_date\":\"$YEAR-01-01\",\"end_date\":\"$YEAR-12-31\"}"
for engine in $ENGINES; do
    dir="$OUT/$engine"
    mkdir -p "$dir"
    port=$(free_port)
    {
        echo '[http]'
        echo 'max_sessions_per_entity = 2000'
    } >"$dir/paywarden.toml"
    if [ "$engine" = postgres ]; then
        DATABASE_URL=$(fresh_pg_db "$PG_URL" paywarden_bench)
        export DATABASE_URL
    else
        unset DATABASE_URL
    fi
    "$PAYWARDEN" serve --config "$dir/paywarden.toml" --listen "127.0.0.1:$port" \
        --data-dir "$dir/data" >"$dir/server.log" 2>&1 & PIDS+=($!)
    server=${PIDS[-1]}
    wait_http "http://127.0.0.1:$port/healthz"
    url="http://127.0.0.1:$port/mcp"
    # Warm-up (and a check that every call succeeds before it is measured).
    call_once "$url" revenue_summary "$REVENUE_ARGS" | grep -q '"result"'
    txs=$(call_once "$url" get_transactions '{"limit":100,"includeLinkedTransactions":false}')
    # The refund flow's reference: the largest debit or capture in a two-decimal currency.
    read -r reference currency < <(printf '%s' "$txs" | sed -n 's/^data: //p' | python3 -c '
import json, sys
text = json.loads(sys.stdin.read())["result"]["content"][0]["text"]
payments = json.loads(text[text.index("{"):])["payments"]
debits = [p for p in payments if p["paymentType"] in ("DB", "CP") and p["currency"] in ("EUR", "USD", "GBP")]
best = max(debits, key=lambda p: p["amountMinor"])
print(best["id"], best["currency"])')
    # rmcp alone answering with a copy of this answer: what the protocol costs for an answer of
    # revenue_summary's size, without paywarden's pipeline (once, with the first engine's answer).
    if [ ! -f "$OUT/answer.json" ]; then
        call_once "$url" revenue_summary "$REVENUE_ARGS" | sed -n 's/^data: //p' |
            python3 -c 'import json, sys; json.dump(json.load(sys.stdin)["result"], sys.stdout)' >"$OUT/answer.json"
        noop_row "rmcp stateless tool answering revenue_summary's answer ($(wc -c <"$OUT/answer.json") bytes)" \
            --answer "$OUT/answer.json"
    fi
    sleep 1
    idle=$(rss_mb "$server")

    wrk_run "$engine: revenue_summary, 1 connection (one SSE answer)" "$url" \
        "$(call_body revenue_summary "$REVENUE_ARGS")" revenue_summary 1 1
    wrk_run "$engine: revenue_summary (audited read)" "$url" \
        "$(call_body revenue_summary "$REVENUE_ARGS")" revenue_summary
    read_rps="$LAST_RPS"
    # The server stays up (idle) while the no-op server next to it is measured.
    noop_row "rmcp stateless no-op tool, again right after the $engine read"
    if [ "${LAST_RPS:-0}" -gt 0 ]; then
        RATIOS+=("- $engine: audited read / rmcp no-op measured right after it: $read_rps / $LAST_RPS = $((read_rps * 100 / LAST_RPS)) %")
    fi
    ratio_rounds "$engine" "$url"
    if [ "$engine" = postgres ] && [ -n "$PG_SOCKET_URL" ]; then
        socket_read_rows
    fi
    wrk_run "$engine: get_transactions (audited read + OPP emulator)" "$url" \
        "$(call_body get_transactions '{"limit":5,"includeLinkedTransactions":false}')" get_transactions
    line=$("$BENCH" refund --url "$url" --connections "$CONNS" --seconds "$SECONDS_EACH" \
        --reference "$reference" --currency "$currency")
    # shellcheck disable=SC2086
    row "$engine: confirmed refund flow, one transaction for all (preview + confirmation = 1)" $(echo "$line" | cut -d' ' -f2-)
    opp=$(sed -n 's/.*offline emulator at \(http:[^;]*\);.*/\1/p' "$dir/server.log" | head -1)
    # debits N: N debits of 100.00 EUR made at the offline OPP emulator through OPP's own API,
    # comma-separated.
    debits() {
        local ids=()
        for _ in $(seq 1 "$1"); do
            ids+=("$(curl -sf -X POST "$opp/v1/payments" -H "Authorization: Bearer $TOKEN" \
                -d entityId="$ENTITY" -d amount=100.00 -d currency=EUR -d paymentBrand=VISA -d paymentType=DB \
                -d card.number=4200000000000000 -d card.holder=Bench -d card.expiryMonth=12 \
                -d card.expiryYear=2030 -d card.cvv=123 | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')")
        done
        (IFS=,; echo "${ids[*]}")
    }
    # One flow at a time (the latency of one flow, no queueing), rotating over debits of its
    # own so that no payment piles up more refunds than in the row below.
    line=$("$BENCH" refund --url "$url" --connections 1 --seconds "$SECONDS_EACH" \
        --reference "$(debits "$CONNS")" --currency EUR)
    # shellcheck disable=SC2086
    row "$engine: confirmed refund flow, 1 connection (preview + confirmation = 1)" $(echo "$line" | cut -d' ' -f2-)
    # The same flow with one transaction per connection (an agent refunding different payments),
    # each connection rotating over BENCH_REFUND_PAYMENTS (default 8) payments of its own. Until
    # 2026-12-05's fourth sitting each connection refunded one payment, which gathered ~50
    # refunds in 10 s, and OPP's query of a payment returns all its linked transactions: the
    # emulator's reads grew with that pile, more than a real payment's refunds.
    per_conn="${BENCH_REFUND_PAYMENTS:-8}"
    line=$("$BENCH" refund --url "$url" --connections "$CONNS" --seconds "$SECONDS_EACH" \
        --reference "$(debits $((CONNS * per_conn)))" --currency EUR)
    # shellcheck disable=SC2086
    row "$engine: confirmed refund flow, a transaction per connection, $per_conn payments each (preview + confirmation = 1)" $(echo "$line" | cut -d' ' -f2-)
    line=$("$BENCH" sessions --url "$url" --connections "$CONNS" --seconds "$SECONDS_EACH")
    # shellcheck disable=SC2086
    row "$engine: session clients, revenue_summary (2025-11-25)" $(echo "$line" | cut -d' ' -f2-)

    busy=$(rss_mb "$server")
    fifo="$dir/sessions.out"
    "$BENCH" open-sessions --url "$url" --count 1000 --hold 5 >"$fifo" & opener=$!
    for _ in $(seq 1 600); do grep -q opened "$fifo" 2>/dev/null && break; sleep 0.2; done
    with_sessions=$(rss_mb "$server")
    wait "$opener"
    RESULTS+=("| $engine: RSS idle / after the load / with 1,000 open sessions | ${idle} MB / ${busy} MB / ${with_sessions} MB | | | | |")
    echo "$engine RSS: idle $idle MB, after load $busy MB, with 1,000 sessions $with_sessions MB" >&2
    kill "$server"
    wait "$server" 2>/dev/null || true
done

# --- BEGIN search at scale (issue 15, item 4) -----------------------------------------------------
# search_transactions over BENCH_SEARCH_TRANSACTIONS (default 1,000,000) emulator transactions of
# the demo entity spread over the last 365 days, seeded once (`paywarden seed --transactions`,
# before any server starts) into one emulator database that each engine's data directory links
# to. Rows: page 1 (20 records, oldest first) of the whole year on 1 connection; random 30-day
# ranges at random pages (1..4,000 of about 4,100) on BENCH_SEARCH_CONNECTIONS (default 8) and on
# BENCH_CONNECTIONS connections. The p95 is in the row label. BENCH_SEARCH_TRANSACTIONS=0 skips
# these rows.
SEARCH_TXS="${BENCH_SEARCH_TRANSACTIONS:-1000000}"
SEARCH_CONNS="${BENCH_SEARCH_CONNECTIONS:-8}"
if [ "$SEARCH_TXS" -gt 0 ]; then
    seeded="$OUT/search-seed"
    echo "== seeding $SEARCH_TXS OPP transactions into $seeded/emulator.db" >&2
    "$PAYWARDEN" seed --transactions "$SEARCH_TXS" --days 365 --data-dir "$seeded" >&2
    search_label="search_transactions over $(python3 -c "print(f'{int($SEARCH_TXS):,}')") transactions"
    search_row() { # LABEL RESULT-LINE: the p95 goes into the label
        local rest p95
        rest=$(echo "$2" | cut -d' ' -f2-6)
        p95=$(echo "$2" | cut -d' ' -f7)
        # shellcheck disable=SC2086
        row "$1 (p95 $p95 ms)" $rest
    }
    # A wrk script POSTing search_transactions over a random 30-day range of the last year at a
    # random page, counting as an error anything but HTTP 200 with a successful result.
    search_lua="$OUT/search_random.lua"
    template=$(call_body search_transactions '{"dateFrom":"__FROM__","dateTo":"__TO__","limit":20,"pageNo":__PAGE__}' \
        | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')
    cat >"$search_lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
wrk.headers["Mcp-Method"] = "tools/call"
wrk.headers["Mcp-Name"] = "search_transactions"
wrk.headers["X-Entity-Id"] = "$ENTITY"
wrk.headers["X-Token"] = "$TOKEN"
local template = $template
local threads = {}
local counter = 0
function setup(thread) counter = counter + 1; thread:set("id", counter); table.insert(threads, thread) end
function init(args) bad = 0; now = os.time(); math.randomseed(1000 + id) end
function request()
  local to = now - math.random(0, 335 * 86400)
  local from = to - 30 * 86400
  local body = template:gsub("__FROM__", os.date("!%Y-%m-%d %H:%M:%S", from))
  body = body:gsub("__TO__", os.date("!%Y-%m-%d %H:%M:%S", to))
  body = body:gsub("__PAGE__", tostring(math.random(1, 4000)))
  return wrk.format(nil, nil, nil, body)
end
$LUA_CHECK_AND_REPORT
EOF
    YEAR_AGO=$(date -u -d '365 days ago' '+%Y-%m-%d %H:%M:%S')
    for engine in $ENGINES; do
        dir="$OUT/$engine-search"
        mkdir -p "$dir/data"
        # The seeded database, shared (SQLite resolves the link: -wal/-shm sit beside the target).
        ln -sf "$seeded/emulator.db" "$dir/data/emulator.db"
        if [ "$engine" = postgres ]; then
            DATABASE_URL=$(fresh_pg_db "$PG_URL" paywarden_bench_search)
            export DATABASE_URL
        else
            unset DATABASE_URL
        fi
        port=$(free_port)
        "$PAYWARDEN" serve --no-seed --listen "127.0.0.1:$port" --data-dir "$dir/data" \
            >"$dir/server.log" 2>&1 & PIDS+=($!)
        server=${PIDS[-1]}
        wait_http "http://127.0.0.1:$port/healthz"
        url="http://127.0.0.1:$port/mcp"
        call_once "$url" search_transactions "{\"dateFrom\":\"$YEAR_AGO\",\"limit\":20}" | grep -q '"totalCount"'
        lua=$(wrk_lua "search_year_$engine" "$url" \
            "$(call_body search_transactions "{\"dateFrom\":\"$YEAR_AGO\",\"limit\":20}")" search_transactions)
        line=$(wrk -t1 -c1 -d"${SECONDS_EACH}s" --timeout 10s -s "$lua" "$url" | grep '^RESULT')
        search_row "$engine: $search_label, 365-day range, page 1, 1 connection" "$line"
        line=$(wrk -t2 -c"$SEARCH_CONNS" -d"${SECONDS_EACH}s" --timeout 10s -s "$search_lua" "$url" | grep '^RESULT')
        search_row "$engine: $search_label, random 30-day range and page, $SEARCH_CONNS connections" "$line"
        line=$(wrk -t2 -c"$CONNS" -d"${SECONDS_EACH}s" --timeout 10s -s "$search_lua" "$url" | grep '^RESULT')
        search_row "$engine: $search_label, random 30-day range and page, $CONNS connections" "$line"
        kill "$server"
        wait "$server" 2>/dev/null || true
    done
fi
# --- END search at scale -------------------------------------------------------------------------

{
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load average before: $LOAD_BEFORE"
    echo "\`BENCH_SECONDS=$SECONDS_EACH BENCH_CONNECTIONS=$CONNS BENCH_ENGINES=\"$ENGINES\" scripts/bench.sh\` (wrk -t2 -c$CONNS, closed loops of $CONNS connections)"
    echo
    echo "| what | req/s | p50 ms | p99 ms | ok | errors |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${RESULTS[@]}"
    echo
    printf '%s\n' "${RATIOS[@]}"
} | tee "$OUT/results.md"
