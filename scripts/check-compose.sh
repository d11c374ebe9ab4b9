#!/usr/bin/env bash
# Validate compose.yaml offline: no Docker engine is needed, nothing is built or started.
#
#   npm run check:compose                 # checks ./compose.yaml
#   bash scripts/check-compose.sh FILE    # checks another compose file
#
# Validator: the `docker compose` v2 plugin when it is installed (the real target), otherwise
# Debian's docker-compose 1.29 (`docker-compose config -q`), installed with apt-get when
# missing and running as root. Both parse the YAML (anchors and merge keys included),
# interpolate ${VAR:-default}, check every key and value type against the compose-spec JSON
# schema and check cross-references (depends_on targets, named volumes, build context).
# Any warning (e.g. an unset ${VARIABLE} without a default) fails the check too.
#
# The check is hermetic: `.env` files are not read (an --env-file of its own is passed), so the
# result does not depend on a developer's local settings. That file sets only the settings
# compose.yaml requires (the passwords, `${VAR:?...}`), to placeholders; a second run without
# each of them must fail, naming it, so the file can never fall back to built-in credentials.
# Idempotent, needs no TTY.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
file=${1:-$root/compose.yaml}

say() { printf 'check-compose: %s\n' "$*"; }
die() { printf 'check-compose: error: %s\n' "$*" >&2; exit 1; }

[[ -f $file ]] || die "$file not found"

install_docker_compose() {
  local log
  log=$(mktemp)
  say "docker-compose not found; installing Debian's docker-compose with apt-get"
  if ! {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose
  } >"$log" 2>&1 </dev/null; then
    cat "$log" >&2
    rm -f "$log"
    die "could not install docker-compose with apt-get"
  fi
  rm -f "$log"
}

if docker compose version >/dev/null 2>&1; then
  validator=(docker compose)
else
  if ! command -v docker-compose >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
      install_docker_compose
    else
      die "no compose validator: install the docker compose plugin or Debian's docker-compose (apt-get install docker-compose), or run this script as root to install it"
    fi
  fi
  validator=(docker-compose)
fi

version=$("${validator[@]}" version --short 2>/dev/null || true)
say "validating $file with ${validator[*]} ${version}"

# Keep Python's own deprecation noise (docker-compose 1.x) out of the warning check below.
export PYTHONWARNINGS=ignore
export NO_COLOR=1

# Env files of our own instead of the project's `.env` (docker-compose 1.x refuses /dev/null).
required=(RTB_DB_PASSWORD RTB_BROKER_PASSWORD)
empty_env=$(mktemp)
check_env=$(mktemp)
trap 'rm -f "$empty_env" "$check_env"' EXIT
for v in "${required[@]}"; do printf '%s=check-compose-placeholder\n' "$v" >>"$check_env"; done

config_q() { # env-file
  cd "$(dirname "$file")" &&
    "${validator[@]}" --env-file "$1" -f "$(basename "$file")" config -q 2>&1 </dev/null
}

# Each required setting alone left out: the file must be refused, naming it.
if [[ $(basename "$file") == compose.yaml ]]; then
  for v in "${required[@]}"; do
    grep -v "^$v=" "$check_env" >"$empty_env" || true
    if without=$(config_q "$empty_env"); then
      die "$file is valid without $v: it must not fall back to a built-in credential"
    fi
    [[ $without == *"$v"* ]] || die "without $v, the validator's refusal does not name it: $without"
  done
  : >"$empty_env"
fi

output=$(config_q "$check_env") && status=0 || status=$?

if [[ $status -ne 0 ]]; then
  printf '%s\n' "$output" >&2
  die "$file is NOT valid (${validator[*]} exited with status $status)"
fi
# `config -q` prints nothing when all is well; anything else is a warning, such as
# "The FOO variable is not set. Defaulting to a blank string.", and fails the check.
if [[ -n $output ]]; then
  printf '%s\n' "$output" >&2
  die "$file: the validator printed warnings (treated as errors)"
fi

say "$(basename "$file") is valid ($file)"
