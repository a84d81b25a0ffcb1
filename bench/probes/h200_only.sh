#!/usr/bin/env bash
# A cheap try for the issue's own card: on an H200, issue 9's whole table (b1_b16_table.sh, ~7-9 minutes); on
# anything else it only prints the card and stops (well under a minute of device time once the machine is up).
# Usage: bash bench/probes/h200_only.sh
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/device_setup.sh"
if [ "$h200" = 1 ]; then
  bash "$here/b1_b16_table.sh"
else
  echo "not an H200: stopped"
fi
