#!/bin/sh
# Run by the postgres image when its volume is first initialised (/docker-entrypoint-initdb.d): the roles
# of ehr-imaging, from orthanc-config/postgres-roles.sql. The passwords come from the environment through
# psql's \getenv, so they never appear on a command line. Sourced or executed: no `set`, explicit exits.
if [ -z "${EHR_DB_PASSWORD:-}" ] || [ -z "${ORTHANC_DB_PASSWORD:-}" ]; then
    echo "postgres-init.sh: set EHR_DB_PASSWORD and ORTHANC_DB_PASSWORD" >&2
    exit 1
fi
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-ehr_imaging}" <<SQL || exit 1
\getenv plugin_password EHR_DB_PASSWORD
\getenv orthanc_password ORTHANC_DB_PASSWORD
\i ${EHR_ROLES_SQL:-/ehr-imaging/postgres-roles.sql}
SQL
