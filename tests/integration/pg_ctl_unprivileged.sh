#!/bin/sh
# pg_ctl for the sink tests when they run as root (containers): PostgreSQL refuses to run as root,
# so run it as the unprivileged "postgres" user, with only the capability to reach pytest's private,
# root-owned temporary directories where pytest-postgresql puts the data directory.
exec setpriv --reuid=postgres --regid=postgres --init-groups \
    --inh-caps=+dac_override --ambient-caps=+dac_override "$SINK_TESTS_PG_CTL" "$@"
