-- PostgreSQL side of setup.sh: Vault's own user, with the least it needs.
-- Run once as a superuser (or the app database's owner) in the app database:
--
--   psql -d app -f postgres.sql
--   psql -d app -c '\password vault'    -- prompts; keep it for PG_PASSWORD_FILE
--
-- CREATEROLE lets Vault create and drop the per-pod users; it is not
-- SUPERUSER, so Vault cannot read data, bypass row security or change the
-- server. (Since PostgreSQL 16 a CREATEROLE user administers only the roles
-- it created itself.)
CREATE ROLE vault WITH LOGIN CREATEROLE NOSUPERUSER NOCREATEDB NOREPLICATION NOBYPASSRLS;

-- Vault can grant per-pod users only what it holds WITH GRANT OPTION:
-- reading the app's tables, as the role's creation statements do.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO vault WITH GRANT OPTION;
