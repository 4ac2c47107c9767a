#!/bin/sh
# pg-backup.sh DB…: one custom-format pg_dump per database into $BACKUP_DIR (default /backups),
# named DB-YYYYmmddTHHMMSSZ.dump, written under a temporary name first so a half-written dump
# is never mistaken for a backup; dumps older than $BACKUP_KEEP_DAYS days (default 14) are
# removed, and `last-success` is touched only when every database was dumped.
# Connection: the libpq variables (PGHOST, PGUSER, PGPASSFILE or PGPASSWORD, PGPORT).
# Restore one: pg_restore --clean --if-exists --no-owner -d DB DB-….dump (docs/operations.md).
set -eu
dir="${BACKUP_DIR:-/backups}"
keep="${BACKUP_KEEP_DAYS:-14}"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$dir"
for db in "$@"; do
  pg_dump --format=custom --dbname="$db" --file="$dir/$db-$stamp.dump.partial"
  mv "$dir/$db-$stamp.dump.partial" "$dir/$db-$stamp.dump"
  echo "backed up $db to $dir/$db-$stamp.dump"
done
find "$dir" -maxdepth 1 -name '*.dump' -mtime +"$keep" -delete
touch "$dir/last-success"
