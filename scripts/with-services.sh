#!/usr/bin/env bash
# Runs a command with a throw-away PostgreSQL and Redis on free loopback ports, exported
# as TEST_DATABASE_URL and TEST_REDIS_URL, and stops both (and removes their data) after.
#
#   scripts/with-services.sh node --test ...
#
# Missing servers, and Debian's chromium for the browser tests, are installed from
# Debian's packages when running as root (postgresql, redis-server, chromium). Where they
# cannot be had, the command still runs, and the suites that need them say so and skip.
set -uo pipefail

log() { printf 'with-services: %s\n' "$*" >&2; }

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

install_missing() {
  local packages=()
  [ -n "$(pg_bin)" ] && [ -x "$(pg_bin)/initdb" ] || packages+=(postgresql)
  command -v redis-server >/dev/null || packages+=(redis-server)
  [ -x /usr/bin/chromium ] || packages+=(chromium)
  [ ${#packages[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "missing ${packages[*]} and cannot install them (not root, or no apt-get)"
    return 0
  fi
  log "installing ${packages[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || true
  # Services are started below on private ports; keep the packages' own from starting.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null 2>&1 || log "apt-get install ${packages[*]} failed"
  rm -f /usr/sbin/policy-rc.d
}

free_port() { node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

workdir=$(mktemp -d /tmp/parley-services.XXXXXX)
chmod 755 "$workdir"
pg_started=""
redis_pid=""

cleanup() {
  if [ -n "$pg_started" ]; then
    run_as_pg "$(pg_bin)/pg_ctl" -D "$workdir/pg" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null; fi
  rm -rf "$workdir"
}
trap cleanup EXIT INT TERM

# initdb refuses to run as root: run PostgreSQL as the postgres user when we are root.
run_as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install_missing

bin=$(pg_bin)
if [ -n "$bin" ] && [ -x "$bin/initdb" ]; then
  port=$(free_port)
  mkdir -p "$workdir/pg" && { [ "$(id -u)" != 0 ] || chown postgres "$workdir" "$workdir/pg"; }
  if run_as_pg "$bin/initdb" -D "$workdir/pg" -A trust -U parley >"$workdir/initdb.log" 2>&1 &&
     run_as_pg "$bin/pg_ctl" -D "$workdir/pg" -l "$workdir/pg.log" -w \
       -o "-p $port -k $workdir -c listen_addresses=127.0.0.1 -c fsync=on" start >/dev/null 2>&1; then
    pg_started=1
    export TEST_DATABASE_URL="postgres://parley@127.0.0.1:$port/postgres"
    log "PostgreSQL on 127.0.0.1:$port"
  else
    log "PostgreSQL did not start: $(tail -n 3 "$workdir"/*.log 2>/dev/null)"
  fi
fi

if command -v redis-server >/dev/null; then
  rport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >"$workdir/redis.log" 2>&1 &
  redis_pid=$!
  for _ in $(seq 1 50); do
    if node -e "require('net').connect($rport,'127.0.0.1').on('connect',()=>process.exit(0)).on('error',()=>process.exit(1))" 2>/dev/null; then
      export TEST_REDIS_URL="redis://127.0.0.1:$rport"
      log "Redis on 127.0.0.1:$rport"
      break
    fi
    sleep 0.1
  done
fi

"$@"
