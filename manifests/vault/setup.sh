#!/usr/bin/env bash
# Configures Vault for podlease. Safe to run again: every step writes its
# object in full.
#
#   setup.sh [all|cluster|secrets]      [all]
#
#   cluster  one cluster's side: the kubernetes auth method at auth/AUTH_MOUNT
#            (its API server, CA and reviewer token) and its role "app" for
#            ServiceAccount app, granting policy "app". Run it once per
#            cluster, each with its own AUTH_MOUNT (e.g. kubernetes-prod-eu);
#            it touches nothing outside auth/AUTH_MOUNT.
#   secrets  the Vault side shared by every cluster: the policy "app", and
#            the database secrets engine's connection "pg" and dynamic role
#            "app" (database/creds/app).
#   all      both (one cluster, one Vault).
#
# Run it as a Vault operator: VAULT_ADDR and VAULT_TOKEN (or a prior `vault
# login`) as for any vault command, with a token that may write these paths.
#
# Settings, from the environment [default]:
# cluster side:
#   AUTH_MOUNT               path of the kubernetes auth method, without auth/
#                            [kubernetes]; pods then run vault-init
#                            --auth-mount=AUTH_MOUNT
#   WORKLOAD_NAMESPACE       namespace the app's pods run in [default]
#   KUBERNETES_HOST          the API server's URL as Vault reaches it
#                            [https://kubernetes.default.svc]
#   KUBERNETES_CA_CERT_FILE  PEM file of the API server's CA [empty: Vault
#                            running in the cluster uses its pod's]
#   TOKEN_REVIEWER_JWT_FILE  token of ServiceAccount vault-token-reviewer
#                            (token-reviewer.yaml) [empty: Vault running in
#                            the cluster reviews with its own pod's token]
#   KUBERNETES_ISSUER        iss of service-account tokens, to have Vault
#                            check it [empty: not checked]
#   TOKEN_TTL/TOKEN_MAX_TTL  the pod's Vault token [1h / 24h]
# secrets side:
#   PG_CONNECTION_URL        required, e.g.
#                            postgresql://{{username}}:{{password}}@db.example:5432/app?sslmode=verify-full
#                            (Vault fills in the placeholders itself)
#   PG_USERNAME              Vault's own PostgreSQL user [vault]: it needs
#                            LOGIN CREATEROLE, not SUPERUSER (postgres.sql)
#   PG_PASSWORD_FILE         required: file holding PG_USERNAME's password
#   PG_VERIFY_CONNECTION     check the connection when writing it [true]
#   PG_ROTATE_ROOT           true: have Vault change PG_USERNAME's password
#                            at once, so that only Vault knows it [false]
#   DB_DEFAULT_TTL/DB_MAX_TTL    a credential's lease: default, and the most
#                                it can be renewed to [1h / 24h]
# both:
#   VAULT_BIN                the vault CLI to use [vault]
#
# No secret is ever a command-line argument: passwords and tokens go to the
# vault CLI from files.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
vault=${VAULT_BIN:-vault}

part=${1:-all}
case $part in
  all | cluster | secrets) ;;
  *)
    echo "usage: setup.sh [all|cluster|secrets] (got \"$part\"); the settings come from the environment, see the header of $0" >&2
    exit 2
    ;;
esac
cluster=false secrets=false
[[ $part == secrets ]] || cluster=true
[[ $part == cluster ]] || secrets=true

if [[ $cluster == true ]]; then
  : "${AUTH_MOUNT:=kubernetes}"
  AUTH_MOUNT=${AUTH_MOUNT#auth/}
  AUTH_MOUNT=${AUTH_MOUNT%/}
  [[ $AUTH_MOUNT =~ ^[A-Za-z0-9][A-Za-z0-9._/-]*$ ]] || {
    echo "setup.sh: AUTH_MOUNT \"$AUTH_MOUNT\": want a mount path such as kubernetes or kubernetes-prod-eu" >&2
    exit 2
  }
  : "${WORKLOAD_NAMESPACE:=default}"
  : "${KUBERNETES_HOST:=https://kubernetes.default.svc}"
  : "${KUBERNETES_CA_CERT_FILE:=}"
  : "${TOKEN_REVIEWER_JWT_FILE:=}"
  : "${KUBERNETES_ISSUER:=}"
  : "${TOKEN_TTL:=1h}"
  : "${TOKEN_MAX_TTL:=24h}"
fi
if [[ $secrets == true ]]; then
  : "${PG_CONNECTION_URL:?set PG_CONNECTION_URL, e.g. postgresql://{{username}}:{{password}}@db.example:5432/app?sslmode=verify-full}"
  : "${PG_USERNAME:=vault}"
  : "${PG_PASSWORD_FILE:?set PG_PASSWORD_FILE to a file holding the password of PostgreSQL user ${PG_USERNAME}}"
  : "${PG_VERIFY_CONNECTION:=true}"
  : "${PG_ROTATE_ROOT:=false}"
  : "${DB_DEFAULT_TTL:=1h}"
  : "${DB_MAX_TTL:=24h}"
fi

step() { printf 'setup: %s\n' "$*" >&2; }

# enabled TYPE PATH: is a method of the "vault auth|secrets list" kind TYPE
# mounted at PATH/?
enabled() {
  local list
  list=$("$vault" "$1" list -format=json)
  [[ $list == *"\"$2/\""* ]]
}

if [[ $secrets == true ]]; then
  step "policy app (from policy-app.hcl)"
  "$vault" policy write app "$here/policy-app.hcl" >/dev/null

  if ! enabled secrets database; then
    step "enable secrets engine database"
    "$vault" secrets enable database >/dev/null
  fi

  # The password reaches vault on stdin (password=-), without the file's final
  # newline; printf is a shell builtin, so it is in no process's arguments.
  step "database/config/pg: PostgreSQL as ${PG_USERNAME}, for role app only"
  printf '%s' "$(<"$PG_PASSWORD_FILE")" | "$vault" write database/config/pg \
    plugin_name=postgresql-database-plugin \
    connection_url="${PG_CONNECTION_URL}" \
    username="${PG_USERNAME}" \
    password=- \
    password_authentication=scram-sha-256 \
    allowed_roles=app \
    verify_connection="${PG_VERIFY_CONNECTION}" >/dev/null

  if [[ $PG_ROTATE_ROOT == true ]]; then
    step "database/rotate-root/pg: only Vault knows ${PG_USERNAME}'s password from now on"
    "$vault" write -f database/rotate-root/pg >/dev/null
  fi

  # Each credential is a PostgreSQL user of its own that can log in only until
  # its lease expires (VALID UNTIL) and read the app's tables; revoking the
  # lease drops it.
  step "database/roles/app: leases of ${DB_DEFAULT_TTL}, renewable up to ${DB_MAX_TTL}"
  "$vault" write database/roles/app \
    db_name=pg \
    creation_statements="CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';" \
    creation_statements="GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";" \
    revocation_statements="REVOKE ALL ON ALL TABLES IN SCHEMA public FROM \"{{name}}\";" \
    revocation_statements="DROP ROLE IF EXISTS \"{{name}}\";" \
    default_ttl="${DB_DEFAULT_TTL}" \
    max_ttl="${DB_MAX_TTL}" >/dev/null
fi

if [[ $cluster == true ]]; then
  if ! enabled auth "$AUTH_MOUNT"; then
    step "enable auth method kubernetes at auth/${AUTH_MOUNT}"
    "$vault" auth enable -path="$AUTH_MOUNT" kubernetes >/dev/null
  fi

  step "auth/${AUTH_MOUNT}/config: API server ${KUBERNETES_HOST}"
  config=("kubernetes_host=${KUBERNETES_HOST}")
  if [[ -n $KUBERNETES_CA_CERT_FILE ]]; then
    config+=("kubernetes_ca_cert=@${KUBERNETES_CA_CERT_FILE}")
  fi
  if [[ -n $TOKEN_REVIEWER_JWT_FILE ]]; then
    # A Vault outside the cluster: review with this token, not a local one.
    config+=("token_reviewer_jwt=@${TOKEN_REVIEWER_JWT_FILE}" "disable_local_ca_jwt=true")
  fi
  if [[ -n $KUBERNETES_ISSUER ]]; then
    config+=("issuer=${KUBERNETES_ISSUER}")
  fi
  "$vault" write "auth/${AUTH_MOUNT}/config" "${config[@]}" >/dev/null

  # Only ServiceAccount app of the workload namespace, and only with a token
  # minted for Vault (audience vault: the pods' projected vault-token volume),
  # gets policy app.
  step "auth/${AUTH_MOUNT}/role/app: ServiceAccount ${WORKLOAD_NAMESPACE}/app, audience vault"
  "$vault" write "auth/${AUTH_MOUNT}/role/app" \
    bound_service_account_names=app \
    bound_service_account_namespaces="${WORKLOAD_NAMESPACE}" \
    audience=vault \
    token_policies=app \
    token_ttl="${TOKEN_TTL}" \
    token_max_ttl="${TOKEN_MAX_TTL}" >/dev/null
fi

if [[ $cluster == true ]]; then
  step "done: pods of ServiceAccount ${WORKLOAD_NAMESPACE}/app can run vault-init --auth-mount=${AUTH_MOUNT} --role=app --secret=db=database/creds/app"
else
  step "done: policy app and database/creds/app are ready; run setup.sh cluster once per cluster"
fi
