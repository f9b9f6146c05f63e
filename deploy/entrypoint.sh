#!/bin/sh
# The image's entrypoint: the first argument, else IDMESH_SERVICE, names what to run; the rest
# are passed on. Every service is configured by IDMESH_* environment variables.
set -eu
what="${IDMESH_SERVICE:-}"
if [ "$#" -gt 0 ]; then
    what="$1"
    shift
fi
case "$what" in
    operator_registry | registry) exec python -m services.operator_registry "$@" ;;
    notifier) exec python -m services.notifier "$@" ;;
    messenger_gateway | gateway) exec python -m services.messenger_gateway "$@" ;;
    idmesh | cli) exec idmesh "$@" ;;
    *)
        echo "usage: idmesh-entrypoint operator_registry | notifier | messenger_gateway" >&2
        echo "       idmesh-entrypoint idmesh <cli arguments>   (or set IDMESH_SERVICE)" >&2
        [ "$what" = "help" ] && exit 0
        exit 2
        ;;
esac
