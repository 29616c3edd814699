#!/usr/bin/env bash
# Remake the README's pictures of the HTML plan: a 10,000-person plan against
# the bundled sandbox org, rendered by headless Chromium (Debian's package).
# Run from the repository root with reconcile installed: bash docs/screenshots.sh
set -euo pipefail
out=$(pwd)/docs
mkdir -p "$out"
work=$(mktemp -d)
cd "$work"
reconcile sandbox serve --seed scale:10000 > env.sh &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q SALESFORCE env.sh 2>/dev/null && break; sleep 0.2; done
# shellcheck disable=SC1091
. ./env.sh
reconcile sandbox outcomes --seed scale:10000 -o outcomes.csv
reconcile --archive plans plan outcomes.csv >/dev/null || true    # exit 2 under --detailed-exitcode only
page=$(ls -d "$work"/plans/*/ | head -n 1)plan.html
shot() {  # name, height, fragment: a frame of the page's width, scrolled to the fragment
  printf '<body style="margin:0"><iframe src="%s" style="border:0;width:1280px;height:%spx"></iframe>' \
    "file://$page$3" "$2" > "$work/frame.html"
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$work/chrome" --hide-scrollbars --virtual-time-budget=3000 --window-size=1280,"$2" \
    --screenshot="$out/$1" "file://$work/frame.html" 2>/dev/null
}
shot plan-screenshot.png 1500 ""
shot plan-review-screenshot.png 1300 "#review"
shot plan-records-screenshot.png 1300 "#steps"
echo "pictures written to $out"
