# Shell helpers of the bench scripts (sourced, not run).

# wait_healthy PORT PID LOG: returns once the vmshot serve of PID answers
# /healthz on PORT; if it exits first (or takes over 20 s), prints its LOG to
# stderr and fails, so that a daemon that refused its config says why.
wait_healthy() {
    local port=$1 pid=$2 log=$3
    for _ in $(seq 1 200); do
        curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    cat "$log" >&2
    echo "vmshot serve (pid $pid) did not answer on port $port" >&2
    return 1
}
