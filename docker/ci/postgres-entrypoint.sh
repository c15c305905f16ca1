#!/bin/sh
# Entrypoint of the PostgreSQL stand-in image (docker/ci/postgres.Dockerfile). Like the official image's: on
# first start (an empty $PGDATA) it creates the cluster in UTF8 with POSTGRES_USER as superuser, password
# POSTGRES_PASSWORD required from other hosts, and the database POSTGRES_DB; then it runs the server.
# UTF8 matters: with an SQL_ASCII database psycopg returns bytes and SQLAlchemy cannot read the server version.
set -eu

if [ "${1:-}" != "postgres" ]; then
    exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "docker-entrypoint.sh: POSTGRES_PASSWORD must be set" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb --pgdata="$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" \
        --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != "postgres" ]; then
        # Local socket only while the database is created, so nobody connects to a half-made cluster.
        pg_ctl --pgdata="$PGDATA" --options="-c listen_addresses=''" --wait start
        psql --username="$POSTGRES_USER" --dbname=postgres --set=ON_ERROR_STOP=1 \
            --command="CREATE DATABASE \"$POSTGRES_DB\""
        pg_ctl --pgdata="$PGDATA" --mode=fast --wait stop
    fi
fi

shift
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
