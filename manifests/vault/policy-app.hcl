# Vault policy "app": what a pod running podlease as ServiceAccount app needs,
# and nothing more. Written by setup.sh; bound by the kubernetes auth role app.
#
# The token also keeps Vault's "default" policy, which lets it look up, renew
# and revoke itself (auth/token/lookup-self, renew-self, revoke-self):
# vault-renew and vault-revoke need exactly that for the pod's own token.

# Its own database credentials: this role's path only, not database/creds/*.
path "database/creds/app" {
  capabilities = ["read"]
}

# Keep its leases alive (vault-renew) and give them back (vault-revoke). Both
# take the lease id in the request body, so the ACL cannot narrow them by
# path; lease ids are unguessable and only ever known to the pod that got them.
path "sys/leases/renew" {
  capabilities = ["update"]
}
path "sys/leases/revoke" {
  capabilities = ["update"]
}
