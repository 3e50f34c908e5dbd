#!/usr/bin/env bash
# Drop and recreate the database DATABASE_URL names, then migrate it.
set -euo pipefail
url="${DATABASE_URL:-postgres://localhost:5432/conversa?sslmode=disable}"
db="$(sed -E 's#^[a-z]+://[^/]*/([^?]*).*#\1#' <<<"$url")"
admin="$(sed -E "s#/${db}(\?|$)#/postgres\1#" <<<"$url")"
psql "$admin" -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS \"${db}\" WITH (FORCE)" -c "CREATE DATABASE \"${db}\""
go run ./cmd/conversa migrate
