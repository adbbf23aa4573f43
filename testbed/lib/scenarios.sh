# shellcheck shell=bash
# Shared by the testbeds' scenario runners (testbed/local, testbed/netns and
# testbed/spire scenarios.sh): run scenarios one after the other, one line each, and
# end with the totals line that scripts/test.sh counts:
#
#   LABEL: 5 passed in 52.1s     (or: `failed: NAME...`, then LABEL: 4 passed, 1 failed in ...)

# scenarios_elapsed START: the time since START (date +%s%N) in seconds, one decimal.
scenarios_elapsed() {
    local ms=$((($(date +%s%N) - $1) / 1000000))
    printf '%d.%01ds' $((ms / 1000)) $((ms % 1000 / 100))
}

# run_scenarios [--width N] [--show REGEX] [--out-dir DIR] LABEL RUN NAME...: run
# `RUN NAME` for each NAME, its output (stdout and stderr) in a file, and print
# `scenario NAME ok (12.3s)` or `... FAILED (...)` followed by the whole output of the
# failed scenario, indented; then the totals line. Returns 1 when a scenario failed.
#   --width N      the width of the name column (default 10)
#   --show REGEX   the lines of a passing scenario's output repeated under its line
#   --out-dir DIR  keep each output as DIR/scenario-NAME.out (default: a temporary
#                  file, removed)
run_scenarios() {
    local width=10 show="" out_dir=""
    while (($#)); do
        case $1 in
        --width) width=$2 ;;
        --show) show=$2 ;;
        --out-dir) out_dir=$2 ;;
        *) break ;;
        esac
        shift 2
    done
    local label=$1 run=$2 name out status start t0 passed=0 failed=0 failures=()
    shift 2
    start=$(date +%s%N)
    for name in "$@"; do
        t0=$(date +%s%N)
        if [[ -n "$out_dir" ]]; then
            out="$out_dir/scenario-$name.out"
        else
            out=$(mktemp)
        fi
        if "$run" "$name" >"$out" 2>&1; then
            status=ok
            passed=$((passed + 1))
        else
            status=FAILED
            failed=$((failed + 1))
            failures+=("$name")
        fi
        printf 'scenario %-*s %s (%s)\n' "$width" "$name" "$status" "$(scenarios_elapsed "$t0")"
        if [[ "$status" != ok ]]; then
            sed 's/^/    /' "$out"
        elif [[ -n "$show" ]]; then
            grep -E "$show" "$out" | sed 's/^/    /' || true
        fi
        [[ -n "$out_dir" ]] || rm -f "$out"
    done

    if ((failed)); then
        echo "failed: ${failures[*]}"
        echo "$label: $passed passed, $failed failed in $(scenarios_elapsed "$start")"
        return 1
    fi
    echo "$label: $passed passed in $(scenarios_elapsed "$start")"
}
