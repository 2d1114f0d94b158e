#!/bin/sh
# Container entrypoint for the synthaug images.
#   api      -> (when SYNTHAUG_MIGRATE_ON_START=1) synthaug db upgrade, then synthaug serve --host 0.0.0.0
#   migrate  -> synthaug db upgrade   (the one-shot compose service runs this)
#   anything else is exec'd as given  (e.g. `synthaug keys create --tenant lab-a`, `bash`)
set -eu

cmd="${1:-api}"
[ "$#" -gt 0 ] && shift

case "$cmd" in
  api)
    if [ "${SYNTHAUG_MIGRATE_ON_START:-0}" = "1" ]; then
      synthaug db upgrade
    fi
    exec synthaug serve --host 0.0.0.0 --port "${SYNTHAUG_PORT:-8000}" "$@"
    ;;
  migrate)
    exec synthaug db upgrade "$@"
    ;;
  *)
    exec "$cmd" "$@"
    ;;
esac
