#!/usr/bin/env bash
# Deploy ratelimit on Fly.io with Fly Postgres, in one idempotent command.
#
#   scripts/setup-database.sh [--dry-run] [--org SLUG] [--config PATH] [--pg-app NAME]
#                             [--pg-cluster-size N] [--pg-vm-size SIZE] [--pg-volume-size GB]
#                             [--token-file PATH]
#
# Steps (each skipped when already done, so re-running is safe):
#   preflight  flyctl and curl installed, logged in to Fly
#   config     read `app` and `primary_region` from fly.toml
#   app        create the Fly app                      (skipped if it exists)
#   postgres   create the Fly Postgres cluster         (skipped if it exists)
#   attach     attach it, which sets DATABASE_URL      (skipped if DATABASE_URL is set)
#   secret     generate PHONE_ENCRYPTION_KEY, once     (skipped if the secret is set)
#   token      generate a service token for RATELIMIT_API_TOKENS, once, written to --token-file
#              for your app                            (skipped if the secret is set)
#   deploy     fly deploy (release_command runs `ratelimit db init` first)
#   health     GET https://<app>.fly.dev/health until it reports "ok"
#
# The generated key and token are never printed, nor is any flyctl output that carries
# DATABASE_URL (attach's output is hidden, and redacted when attach fails). See
# docs/deploy-fly.md for the manual steps.

set -euo pipefail

readonly PROG="setup-database"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT

DRY_RUN=0
ORG="${FLY_ORG:-personal}"
CONFIG="${REPO_ROOT}/fly.toml"
PG_APP=""
PG_CLUSTER_SIZE=1
PG_VM_SIZE="shared-cpu-1x"
PG_VOLUME_SIZE=10
HEALTH_ATTEMPTS="${SETUP_HEALTH_ATTEMPTS:-20}"
HEALTH_INTERVAL="${SETUP_HEALTH_INTERVAL:-6}"
TOKEN_FILE="${SETUP_TOKEN_FILE:-${REPO_ROOT}/.ratelimit-api-token}"

STEP="arguments"
FLY=""
APP=""
REGION=""

usage() {
  cat <<'EOF'
Usage: scripts/setup-database.sh [options]

Creates (if missing) the Fly app, a Fly Postgres cluster in the app's primary region,
attaches it (DATABASE_URL), generates PHONE_ENCRYPTION_KEY once and a service token
(RATELIMIT_API_TOKENS) once, deploys, and checks /health. Safe to re-run: existing
resources and secrets are kept.

Options:
  --dry-run               print what would be done; query Fly but change nothing
  --org SLUG              Fly organization (default: $FLY_ORG or "personal")
  --config PATH           fly.toml to read app and primary_region from (default: ./fly.toml)
  --pg-app NAME           Postgres app name (default: <app>-db)
  --pg-cluster-size N     Postgres nodes; 3 for high availability (default: 1)
  --pg-vm-size SIZE       Postgres VM size (default: shared-cpu-1x)
  --pg-volume-size GB     Postgres volume size in GB (default: 10)
  --token-file PATH       where the generated service token is written, mode 0600, for your
                          app's secret store (default: .ratelimit-api-token in the repository)
  -h, --help              show this help

Environment: SETUP_HEALTH_ATTEMPTS (default 20), SETUP_HEALTH_INTERVAL seconds (default 6),
SETUP_TOKEN_FILE (the --token-file default).
EOF
}

say() { printf '%s: %s\n' "$PROG" "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }

step() {
  STEP="$1"
  shift
  printf '\n==> [%s] %s\n' "$STEP" "$*"
}

# Quote a command for display.
show_cmd() {
  local out="" arg
  for arg in "$@"; do
    out+=" $(printf '%q' "$arg")"
  done
  printf '%s' "${out# }"
}

# Run a command that changes something, or only show it with --dry-run.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '[dry-run] would run: %s\n' "$(show_cmd "$@")"
    return 0
  fi
  printf '+ %s\n' "$(show_cmd "$@")"
  "$@"
}

hint_for_step() {
  case "$1" in
    arguments) echo "run with --help for the options" ;;
    preflight) echo "install flyctl (https://fly.io/docs/flyctl/install/) and run 'fly auth login'" ;;
    config) echo "fly.toml needs top-level 'app = \"<name>\"' and 'primary_region = \"<region>\"'" ;;
    app) echo "app names are global on Fly: if the name is taken, change 'app' in fly.toml" ;;
    postgres) echo "check 'fly postgres list' and your organization's billing; re-run when fixed" ;;
    attach) echo "if the database user already exists, see 'Troubleshooting' in docs/deploy-fly.md" ;;
    secret) echo "check 'fly secrets list --app ${APP:-<app>}'; the key is set only when absent" ;;
    token) echo "check 'fly secrets list --app ${APP:-<app>}'; the token is set only when RATELIMIT_API_TOKENS is absent, and never over an existing --token-file" ;;
    deploy) echo "see 'fly logs --app ${APP:-<app>}'; a failed release_command means 'ratelimit db init' could not reach the database" ;;
    health) echo "see 'fly status --app ${APP:-<app>}' and 'fly logs --app ${APP:-<app>}'" ;;
    *) echo "see docs/deploy-fly.md" ;;
  esac
}

on_exit() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    printf '\n%s: FAILED at step "%s" (exit %d)\n' "$PROG" "$STEP" "$rc" >&2
    printf '%s: hint: %s\n' "$PROG" "$(hint_for_step "$STEP")" >&2
  fi
}
trap on_exit EXIT

die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}

# The value of a top-level string key in a TOML file ("..." or '...'); empty if absent.
toml_string() {
  local key="$1" file="$2"
  sed -nE "s/^[[:space:]]*${key}[[:space:]]*=[[:space:]]*[\"']([^\"']*)[\"'].*$/\\1/p" "$file" | sed -n 1p
}

# Whether a flyctl JSON listing contains an entry whose "Name" (any case) is exactly $2.
# (A bash regex rather than `| grep -q`, which can fail under pipefail with SIGPIPE.)
json_has_name() {
  local json="$1" name="$2"
  local re="\"[Nn][Aa][Mm][Ee]\"[[:space:]]*:[[:space:]]*\"${name}\""
  [[ $json =~ $re ]]
}

# flyctl output with any connection URL or DATABASE_URL value blanked (a failed attach may
# print the URL it made, password included).
redact() {
  sed -E \
    -e 's#(postgres(ql)?://)[^[:space:]"'"'"']*#\1<redacted>#g' \
    -e 's#(DATABASE_URL[[:space:]]*[=:][[:space:]]*)[^[:space:]]*#\1<redacted>#g' \
    -e 's#([Pp]assword[[:space:]]*[=:][[:space:]]*)[^[:space:]]*#\1<redacted>#g'
}

generate_key() {
  # 32 random bytes as 64 hex characters (>= 32 characters, as production requires).
  if command -v openssl >/dev/null 2>&1; then
    openssl rand -hex 32
  else
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n'
  fi
}

# ---------------------------------------------------------------- arguments
need_value() {
  [[ $# -ge 2 && -n "$2" ]] || die "option $1 needs a value"
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --org) need_value "$@"; ORG="$2"; shift ;;
    --config) need_value "$@"; CONFIG="$2"; shift ;;
    --pg-app) need_value "$@"; PG_APP="$2"; shift ;;
    --pg-cluster-size) need_value "$@"; PG_CLUSTER_SIZE="$2"; shift ;;
    --pg-vm-size) need_value "$@"; PG_VM_SIZE="$2"; shift ;;
    --pg-volume-size) need_value "$@"; PG_VOLUME_SIZE="$2"; shift ;;
    --token-file) need_value "$@"; TOKEN_FILE="$2"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
  shift
done

[[ "$PG_CLUSTER_SIZE" =~ ^[1-9][0-9]*$ ]] || die "--pg-cluster-size must be a positive integer"
[[ "$PG_VOLUME_SIZE" =~ ^[1-9][0-9]*$ ]] || die "--pg-volume-size must be a positive integer"
[[ "$HEALTH_ATTEMPTS" =~ ^[1-9][0-9]*$ ]] || die "SETUP_HEALTH_ATTEMPTS must be a positive integer"
[[ "$HEALTH_INTERVAL" =~ ^[0-9]+$ ]] || die "SETUP_HEALTH_INTERVAL must be a whole number of seconds"

if [[ "$DRY_RUN" == 1 ]]; then
  say "dry run: Fly is queried, nothing is created, set or deployed"
fi

# ---------------------------------------------------------------- preflight
step preflight "checking tools and Fly login"
if command -v fly >/dev/null 2>&1; then
  FLY="fly"
elif command -v flyctl >/dev/null 2>&1; then
  FLY="flyctl"
else
  die "flyctl is not installed (https://fly.io/docs/flyctl/install/)"
fi
command -v curl >/dev/null 2>&1 || die "curl is not installed"
account="$("$FLY" auth whoami)" || die "not logged in to Fly: run '$FLY auth login'"
say "logged in as ${account}"

# ---------------------------------------------------------------- config
step config "reading ${CONFIG}"
[[ -f "$CONFIG" ]] || die "no such file: ${CONFIG}"
APP="$(toml_string app "$CONFIG")"
REGION="$(toml_string primary_region "$CONFIG")"
[[ "$APP" =~ ^[a-z0-9][a-z0-9-]*$ ]] || die "fly.toml: 'app' is missing or not a valid Fly app name: '${APP}'"
[[ "$REGION" =~ ^[a-z]{3}$ ]] || die "fly.toml: 'primary_region' is missing or not a region code: '${REGION}'"
PG_APP="${PG_APP:-${APP}-db}"
[[ "$PG_APP" =~ ^[a-z0-9][a-z0-9-]*$ ]] || die "not a valid Fly app name for Postgres: '${PG_APP}'"
say "app=${APP} region=${REGION} org=${ORG} postgres=${PG_APP}"

# ---------------------------------------------------------------- app
step app "Fly app ${APP}"
apps_json="$("$FLY" apps list --json)"
app_exists=0
if json_has_name "$apps_json" "$APP"; then
  app_exists=1
  say "app ${APP} exists: skipped"
else
  run "$FLY" apps create "$APP" --org "$ORG"
fi

# ---------------------------------------------------------------- postgres
step postgres "Fly Postgres cluster ${PG_APP} in ${REGION}"
pg_json="$("$FLY" postgres list --json)"
if json_has_name "$pg_json" "$PG_APP"; then
  say "postgres ${PG_APP} exists: skipped"
else
  if [[ "$DRY_RUN" == 0 ]]; then
    say "creating Postgres; flyctl prints its superuser credentials once: keep them in a password manager"
  fi
  run "$FLY" postgres create \
    --name "$PG_APP" \
    --region "$REGION" \
    --org "$ORG" \
    --initial-cluster-size "$PG_CLUSTER_SIZE" \
    --vm-size "$PG_VM_SIZE" \
    --volume-size "$PG_VOLUME_SIZE"
fi

# ---------------------------------------------------------------- attach
step attach "attach ${PG_APP} to ${APP} (sets DATABASE_URL)"
secrets_json="[]"
if [[ "$app_exists" == 1 || "$DRY_RUN" == 0 ]]; then
  secrets_json="$("$FLY" secrets list --app "$APP" --json)"
fi
if json_has_name "$secrets_json" "DATABASE_URL"; then
  say "DATABASE_URL is already set: skipped (to point at another cluster, 'fly postgres detach' first)"
elif [[ "$DRY_RUN" == 1 ]]; then
  run "$FLY" postgres attach "$PG_APP" --app "$APP"
else
  printf '+ %s\n' "$(show_cmd "$FLY" postgres attach "$PG_APP" --app "$APP")"
  # flyctl prints the new DATABASE_URL, password included: show it only if attaching fails.
  # On failure its error is shown, with any URL or password in it redacted.
  if ! attach_out="$("$FLY" postgres attach "$PG_APP" --app "$APP" 2>&1)"; then
    printf '%s\n' "$attach_out" | redact >&2
    die "fly postgres attach failed"
  fi
  unset attach_out
  say "attached: DATABASE_URL is set as a secret of ${APP} (its value is not shown)"
fi

# ---------------------------------------------------------------- secret
step secret "PHONE_ENCRYPTION_KEY"
if json_has_name "$secrets_json" "PHONE_ENCRYPTION_KEY"; then
  say "PHONE_ENCRYPTION_KEY is already set: kept (changing it makes every stored count unreachable)"
elif [[ "$DRY_RUN" == 1 ]]; then
  printf '[dry-run] would run: %s  (stdin: PHONE_ENCRYPTION_KEY=<64 random hex characters, never shown>)\n' \
    "$(show_cmd "$FLY" secrets import --app "$APP" --stage)"
else
  printf '+ %s  (stdin: PHONE_ENCRYPTION_KEY=<generated, not shown>)\n' \
    "$(show_cmd "$FLY" secrets import --app "$APP" --stage)"
  key="$(generate_key)"
  [[ ${#key} -ge 32 ]] || die "could not generate a random key"
  # Through stdin, so the key appears neither in the output nor in the process list.
  printf 'PHONE_ENCRYPTION_KEY=%s\n' "$key" | "$FLY" secrets import --app "$APP" --stage >/dev/null
  unset key
  say "PHONE_ENCRYPTION_KEY generated and staged (applied by the deploy below)"
  say "back it up now: see 'Back up the key' in docs/deploy-fly.md"
fi

# ---------------------------------------------------------------- token
# NODE_ENV=production (fly.toml) refuses to serve without a token: the daemon would otherwise
# let anyone on the internet consume any number's quota. Your app sends it as
# "Authorization: Bearer <token>"; it is written to a file (never printed) for your app's secrets.
step token "RATELIMIT_API_TOKENS (the service token your app sends)"
if json_has_name "$secrets_json" "RATELIMIT_API_TOKENS"; then
  say "RATELIMIT_API_TOKENS is already set: kept (to add one, see 'Tokens' in docs/deploy-fly.md)"
elif [[ "$DRY_RUN" == 1 ]]; then
  printf '[dry-run] would run: %s  (stdin: RATELIMIT_API_TOKENS=<64 random hex characters, written to %s, never shown>)\n' \
    "$(show_cmd "$FLY" secrets import --app "$APP" --stage)" "$TOKEN_FILE"
else
  [[ ! -e "$TOKEN_FILE" ]] || die "${TOKEN_FILE} exists: it may hold a token your app uses; move it away or pass --token-file"
  printf '+ %s  (stdin: RATELIMIT_API_TOKENS=<generated, written to %s>)\n' \
    "$(show_cmd "$FLY" secrets import --app "$APP" --stage)" "$TOKEN_FILE"
  token="$(generate_key)"
  [[ ${#token} -ge 32 ]] || die "could not generate a random token"
  # 0600 from the start (umask in a subshell), and never through a file someone planted (noclobber).
  (umask 077 && set -o noclobber && printf '%s\n' "$token" >"$TOKEN_FILE")
  printf 'RATELIMIT_API_TOKENS=%s\n' "$token" | "$FLY" secrets import --app "$APP" --stage >/dev/null
  unset token
  say "service token generated and staged (applied by the deploy below), and written to ${TOKEN_FILE} (mode 0600)"
  say "store it in your app's secrets (e.g. RATELIMIT_TOKEN) and delete the file: your app sends it as 'Authorization: Bearer <token>'"
fi

# ---------------------------------------------------------------- deploy
step deploy "fly deploy (release_command runs 'ratelimit db init' before the new machines start)"
cd "$REPO_ROOT"
run "$FLY" deploy --config "$CONFIG" --app "$APP" --remote-only

# ---------------------------------------------------------------- health
HEALTH_URL="https://${APP}.fly.dev/health"
step health "GET ${HEALTH_URL}"
if [[ "$DRY_RUN" == 1 ]]; then
  printf '[dry-run] would run: %s  (up to %s attempts)\n' \
    "$(show_cmd curl -fsS --max-time 10 "$HEALTH_URL")" "$HEALTH_ATTEMPTS"
  say "dry run complete: nothing was changed"
  exit 0
fi

body=""
healthy=0
ok_re='"status"[[:space:]]*:[[:space:]]*"ok"'
for ((attempt = 1; attempt <= HEALTH_ATTEMPTS; attempt++)); do
  if body="$(curl -fsS --max-time 10 "$HEALTH_URL" 2>&1)"; then
    if [[ $body =~ $ok_re ]]; then
      healthy=1
      break
    fi
    say "attempt ${attempt}/${HEALTH_ATTEMPTS}: not ok yet: ${body}"
  else
    say "attempt ${attempt}/${HEALTH_ATTEMPTS}: no answer yet (${body})"
  fi
  if [[ $attempt -lt $HEALTH_ATTEMPTS ]]; then
    sleep "$HEALTH_INTERVAL"
  fi
done
[[ "$healthy" == 1 ]] || die "${HEALTH_URL} did not report status ok; last answer: ${body:-none}"
say "healthy: ${body}"

STEP="done"
printf '\n%s: done. %s is deployed with Fly Postgres %s.\n' "$PROG" "$APP" "$PG_APP"
cat <<EOF
Next:
  fly ssh console --app ${APP} -C "ratelimit stats"      # counts from the database
  WebSocket endpoint: wss://${APP}.fly.dev/ws, HTTP: https://${APP}.fly.dev/v1/consume
  Your app authenticates with the service token (from ${TOKEN_FILE} if this run made it):
    curl -H "Authorization: Bearer \$RATELIMIT_TOKEN" -H 'Content-Type: application/json' \\
      -d '{"phoneNumber":"+14155552671"}' https://${APP}.fly.dev/v1/consume
  (the header, not ?token=: query strings end up in proxy and access logs)
EOF
