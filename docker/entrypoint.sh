#!/bin/sh
# Container entrypoint for the synthaug images.
#   api           -> synthaug serve --host 0.0.0.0 --port ${SYNTHAUG_PORT:-8000}
#                    (with SYNTHAUG_BROKER_URL set: the API only; without: embedded, which migrates itself)
#   migrate       -> synthaug db upgrade   (the one-shot compose service; the API never migrates
#                    in distributed mode)
#   worker ARGS   -> synthaug worker ARGS  (a Celery worker, e.g. --queues train --concurrency 1)
#   beat          -> synthaug beat         (Celery beat: exactly one per deployment)
#   anything else is exec'd as given       (e.g. `synthaug keys create --tenant lab-a`, `bash`)
set -eu

cmd="${1:-api}"
if [ "$#" -gt 0 ]; then
  shift
fi

case "$cmd" in
  api)
    exec synthaug serve --host 0.0.0.0 --port "${SYNTHAUG_PORT:-8000}" "$@"
    ;;
  migrate)
    exec synthaug db upgrade "$@"
    ;;
  worker)
    exec synthaug worker "$@"
    ;;
  beat)
    exec synthaug beat "$@"
    ;;
  *)
    exec "$cmd" "$@"
    ;;
esac
