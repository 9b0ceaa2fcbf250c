#!/usr/bin/env bash
# Makes sure PostgreSQL server binaries and the `postgres` OS user exist, then prints the bin dir.
# Idempotent. The tests start their own throwaway clusters, so Debian's cluster is never run.
set -euo pipefail

log() { echo "ensure_postgres: $*" >&2; }
die() { log "$*"; exit 1; }

find_bin_dir() {
  if [[ -n "${MLMESH_PG_BIN:-}" ]]; then
    [[ -x "$MLMESH_PG_BIN/initdb" ]] || die "MLMESH_PG_BIN=$MLMESH_PG_BIN has no initdb"
    echo "$MLMESH_PG_BIN"
    return
  fi
  local dir
  # Highest major version wins; `sort -V` orders 9.6 < 15 < 16 correctly.
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -n "$dir" && -x "$dir/initdb" ]]; then
    echo "$dir"
  fi
}

require_root() {
  [[ $(id -u) -eq 0 ]] || die "$1 needs root (run: sudo $0)"
}

stop_debian_clusters() {
  # The package may have created and started the `main` cluster; the tests never use it.
  if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters --no-header 2>/dev/null | while read -r version name _; do
      pg_ctlcluster "$version" "$name" stop >/dev/null 2>&1 || true
    done
  fi
}

install_postgres() {
  require_root "installing PostgreSQL"
  command -v apt-get >/dev/null 2>&1 || die "no apt-get: install PostgreSQL server binaries by hand"
  log "installing Debian's postgresql package"

  # A policy-rc.d that answers 101 stops maintainer scripts from starting services; only add
  # one when the machine has none of its own, and remove it afterwards.
  local policy=/usr/sbin/policy-rc.d added_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    added_policy=1
  fi
  # Tell postgresql-common not to create the `main` cluster at all.
  mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/mlmesh.conf

  local status=0
  {
    apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold postgresql
  } >&2 || status=$?
  if [[ $added_policy -eq 1 ]]; then
    rm -f "$policy"
  fi
  [[ $status -eq 0 ]] || die "apt-get install postgresql failed (exit $status)"
  stop_debian_clusters
}

ensure_postgres_user() {
  if id -u postgres >/dev/null 2>&1; then
    return
  fi
  # Only needed when running as root: initdb refuses root, so clusters run as `postgres`.
  [[ $(id -u) -eq 0 ]] || return 0
  log "creating the postgres OS user"
  useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
}

bin_dir=$(find_bin_dir)
if [[ -z "$bin_dir" ]]; then
  install_postgres
  bin_dir=$(find_bin_dir)
  [[ -n "$bin_dir" ]] || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb found"
fi
ensure_postgres_user
echo "$bin_dir"
