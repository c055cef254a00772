-- The PostgreSQL roles of ehr-imaging, least privilege (README "Security: database roles").
--
--   ehr_imaging  the plugin: owns the schema ehr_imaging of the plugin's database and nothing else
--                (no superuser, no CREATEDB/CREATEROLE, cannot create schemas or use public)
--   orthanc      Orthanc's index (PostgreSQL index plugin): owns the database orthanc and nothing else
--
-- Run it as a superuser (or a role with CREATEROLE and CREATEDB that may grant these), connected to the
-- plugin's database; it is idempotent (run it again after an upgrade: it also sets the two passwords):
--
--   psql -v ON_ERROR_STOP=1 -v plugin_password="$EHR_DB_PASSWORD" -v orthanc_password="$ORTHANC_DB_PASSWORD" \
--        -h <host> -U <superuser> -d ehr_imaging -f orthanc-config/postgres-roles.sql
--
-- The development stack runs this very file at every start (scripts/ehr_stack/postgres.py); the compose
-- file runs it when its PostgreSQL volume is first initialised (docker/postgres-init.sh).

\set ON_ERROR_STOP on

-- The plugin's role.
SELECT 'CREATE ROLE ehr_imaging' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ehr_imaging') \gexec
ALTER ROLE ehr_imaging WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'plugin_password';

-- Orthanc's index: a database of its own, owned by its own role.
SELECT 'CREATE ROLE orthanc' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orthanc') \gexec
ALTER ROLE orthanc WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'orthanc_password';
SELECT 'CREATE DATABASE orthanc OWNER orthanc ENCODING ''UTF8'' TEMPLATE template0'
    WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'orthanc') \gexec
ALTER DATABASE orthanc OWNER TO orthanc;
REVOKE ALL ON DATABASE orthanc FROM PUBLIC;

-- The plugin's database (the one we are connected to): only the plugin (and superusers) connect; nobody
-- creates objects in public (PostgreSQL 15 already refuses that; older versions allowed it to PUBLIC).
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database()) \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO ehr_imaging', current_database()) \gexec
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- The plugin's schema, owned by the plugin (its migrations create the tables in it, as ehr_imaging).
CREATE SCHEMA IF NOT EXISTS ehr_imaging AUTHORIZATION ehr_imaging;
ALTER SCHEMA ehr_imaging OWNER TO ehr_imaging;

-- Trigram matching for the patient-name search of GET /studies (a contains-match: without it, a scan of every
-- study). pg_trgm ships with PostgreSQL (contrib); a schema of its own, owned by the superuser, that the plugin
-- may only use: the plugin's start-up creates its index with it (store/migrations.py) and, should the extension
-- be missing, searches by a scan and says so in its log.
CREATE SCHEMA IF NOT EXISTS ehr_imaging_ext;
REVOKE ALL ON SCHEMA ehr_imaging_ext FROM PUBLIC;
GRANT USAGE ON SCHEMA ehr_imaging_ext TO ehr_imaging;
CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA ehr_imaging_ext;

-- Objects created in the schema by another role (an installation that ran the plugin as a superuser):
-- hand them to the plugin's role. A no-op once everything belongs to ehr_imaging.
DO $$
DECLARE
    item record;
BEGIN
    FOR item IN
        SELECT c.oid::regclass AS name, c.relkind FROM pg_class c
        WHERE c.relnamespace = 'ehr_imaging'::regnamespace AND c.relowner <> 'ehr_imaging'::regrole
          AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
          -- a sequence of a serial/identity column follows its table
          AND NOT (c.relkind = 'S' AND EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                                AND d.objid = c.oid AND d.deptype IN ('a', 'i')))
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO ehr_imaging',
                       CASE item.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                                         WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE'
                                         ELSE 'TABLE' END, item.name);
    END LOOP;
    FOR item IN
        SELECT t.oid::regtype AS name, t.typtype FROM pg_type t
        WHERE t.typnamespace = 'ehr_imaging'::regnamespace AND t.typowner <> 'ehr_imaging'::regrole
          AND t.typtype IN ('e', 'd', 'r') -- enums, domains, ranges (a table's row type follows the table)
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO ehr_imaging', CASE WHEN item.typtype = 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
                       item.name);
    END LOOP;
    FOR item IN
        SELECT p.oid::regprocedure AS name FROM pg_proc p
        WHERE p.pronamespace = 'ehr_imaging'::regnamespace AND p.proowner <> 'ehr_imaging'::regrole
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO ehr_imaging', item.name);
    END LOOP;
END
$$;
