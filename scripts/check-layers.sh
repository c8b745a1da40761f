#!/usr/bin/env bash
# Dependencies point down: cli → server → api → service → capture → hypervisor,
# service → store (the durable store uses nothing of the crate),
# with config, auth, daemon, frame, record (screen recordings) and serial
# (serial console logs), the last two leaves,
# beside them as listed below. Every
# `crate::<module>` a file names must be one its module may use; this fails,
# naming the file and line, when one is not. Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# module: the modules it may use (besides itself).
declare -A may_use=(
    [frame]=""
    [hypervisor]="frame"
    [capture]="hypervisor frame"
    [service]="capture hypervisor frame store record serial diagnose"
    [store]=""
    [config]=""
    [auth]="config service"
    [api]="service auth config"
    [daemon]=""
    [record]=""
    [serial]=""
    [diagnose]="frame"
    [server]="api service store capture hypervisor auth config daemon frame"
    [cli]="server api service capture hypervisor config daemon frame"
    # The fuzz targets' entry points (fuzz/): beside the top, like cli.
    [fuzzing]="api capture diagnose hypervisor serial"
)
# Known exceptions, each with the work that removes it (none today).
exceptions=()

status=0
while IFS= read -r file; do
    rel=${file#src/}
    module=${rel%%/*}
    module=${module%.rs}
    [ "$module" = lib ] || [ "$module" = main ] && continue
    if [ -z "${may_use[$module]+set}" ]; then
        echo "check-layers: $file: module '$module' has no place in the layers (add it here)" >&2
        status=1
        continue
    fi
    # `crate::name` and each name of `crate::{a, b::c}`.
    while IFS=: read -r line used; do
        [ "$used" = "$module" ] && continue
        case " ${may_use[$module]} " in *" $used "*) continue ;; esac
        case " ${exceptions[*]} " in *" $module $used "*) continue ;; esac
        echo "check-layers: $file:$line: $module may not use crate::$used" >&2
        status=1
    done < <(grep -n 'crate::' "$file" | sed -E 's#//.*##' | while IFS=: read -r n text; do
        grep -oE 'crate::(\{[^}]*\}|[a-z_]+)' <<<"$text" | sed -E 's/^crate:://; s/[{}]//g' |
            tr ',' '\n' | sed -E 's/^ *//; s/::.*//' | grep -E '^[a-z_]+$' | sed "s/^/$n:/" || true
    done)
done < <(find src -name '*.rs' | sort)

[ $status = 0 ] && echo "check-layers: every import points down" >&2
exit $status
